package faultproxy

import (
	"bufio"
	"net"
	"testing"
	"time"
)

func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					c.Write([]byte(line))
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	_, err = bufio.NewReader(c).ReadString('\n')
	return err
}

func TestCutHeal(t *testing.T) {
	p := Start(t, "", echoServer(t))
	if err := roundTrip(p.Addr); err != nil {
		t.Fatalf("before cut: %v", err)
	}
	// An open connection is dropped by Cut.
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x\n"))
	bufio.NewReader(c).ReadString('\n')
	for _, mode := range []Mode{Refuse, Blackhole} {
		p.Cut(mode)
		if err := roundTrip(p.Addr); err == nil {
			t.Fatalf("mode %d: round trip through a cut proxy succeeded", mode)
		}
		p.Heal()
		if err := roundTrip(p.Addr); err != nil {
			t.Fatalf("mode %d: after heal: %v", mode, err)
		}
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection open across Cut still works")
	}
}
