package faultproxy

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Mode is how a cut proxy treats new connections.
type Mode int

const (
	// Refuse closes new connections at once (a host that answers RST).
	Refuse Mode = iota
	// Blackhole accepts new connections and never forwards a byte (a
	// network that drops packets): callers see timeouts.
	Blackhole
)

// Proxy forwards 127.0.0.1:Port to Target.
type Proxy struct {
	Addr   string
	Target string

	ln    net.Listener
	mu    sync.Mutex
	cut   bool
	mode  Mode
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// Start listens on a free loopback port (or addr when not empty) and
// forwards to target. It is closed when the test ends.
func Start(t testing.TB, addr, target string) *Proxy {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("faultproxy: listen %s: %v", addr, err)
	}
	p := &Proxy{Addr: ln.Addr().String(), Target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		cut, mode := p.cut, p.mode
		if cut && mode == Blackhole {
			p.conns[c] = struct{}{} // held open, silent, dropped on Heal or Close
		}
		p.mu.Unlock()
		if cut {
			if mode == Refuse {
				c.Close()
			}
			continue
		}
		go p.forward(c)
	}
}

func (p *Proxy) forward(c net.Conn) {
	up, err := net.Dial("tcp", p.Target)
	if err != nil {
		c.Close()
		return
	}
	if !p.track(c) || !p.track(up) {
		c.Close()
		up.Close()
		return
	}
	var once sync.Once
	done := func() {
		once.Do(func() {
			p.untrack(c)
			p.untrack(up)
		})
	}
	go func() { _, _ = io.Copy(up, c); done() }()
	go func() { _, _ = io.Copy(c, up); done() }()
}

// Cut drops every open connection and treats new ones per mode.
func (p *Proxy) Cut(mode Mode) {
	p.mu.Lock()
	p.cut, p.mode = true, mode
	conns := p.conns
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

// Heal forwards again (connections held by a blackhole are dropped).
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.cut = false
	conns := p.conns
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

// Close stops the proxy and drops every connection. It is idempotent.
func (p *Proxy) Close() {
	p.ln.Close()
	p.Cut(Refuse)
	p.wg.Wait()
}
