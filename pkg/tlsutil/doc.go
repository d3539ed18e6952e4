// Package tlsutil builds the TLS configurations pgdr's processes use
// (coordinator API and Raft traffic, agent to coordinator, pgdrctl) and
// issues a development CA with certificates for labs and demos.
//
// A certificate's role is its subject's first OrganizationalUnit: "admin",
// "read", "agent" or "coordinator". Servers verify client certificates
// against the configured CA when a client presents one; callers without a
// certificate must present a bearer token instead (see coordinator/auth).
package tlsutil
