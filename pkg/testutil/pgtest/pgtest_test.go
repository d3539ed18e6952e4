package pgtest

import (
	"fmt"
	"net"
	"testing"
)

// TestStartOnTakenPort: a port taken between FreePort and the server's
// bind makes Start use another port rather than fail the test.
func TestStartOnTakenPort(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	c := New(t, Options{})
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", c.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := c.Port
	c.Start(t)
	if c.Port == taken {
		t.Fatalf("the server still claims port %d, which this test holds", taken)
	}
	if got := c.QueryString(t, "SELECT current_setting('port')"); got != fmt.Sprint(c.Port) {
		t.Fatalf("server on port %s, cluster says %d", got, c.Port)
	}
}
