// Package s3server runs a real S3 server, versitygw with its posix backend,
// for tests. Each Server is a separate process on a loopback port with its
// own data directory, random credentials and the test's lifetime: it is
// killed by t.Cleanup and, should the test binary die first, by the kernel
// (parent-death signal), so it never outlives the test.
//
// The versitygw binary is taken from PATH or $(go env GOPATH)/bin; if it is
// missing it is built with `go install` (once, under a file lock, so parallel
// test packages do not race). A failed install fails the test: skipping would
// let the S3 backend go untested without anyone noticing.
package s3server
