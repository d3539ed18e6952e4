// Package faultproxy is a TCP proxy on 127.0.0.1 for partition tests: it
// forwards connections to one target until Cut, which drops every open
// connection and refuses (or blackholes) new ones, until Heal.
package faultproxy
