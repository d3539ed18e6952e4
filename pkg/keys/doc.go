// Package keys turns a configuration's encryption section into age
// recipients (for writers) and identities (for readers), and into the stream
// options every stored object is written with. Writers need only public
// recipients; identities are loaded only where restores and fetches run.
package keys
