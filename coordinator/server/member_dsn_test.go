package server

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestRegisterRefusesDSNWithControlCharacters: a member's DSN goes into
// follow, rejoin and switchover orders and from there into the replicas'
// primary_conninfo; one with a newline set archive_command through
// postgresql.auto.conf (issue 13 item 4). Registration refuses it.
func TestRegisterRefusesDSNWithControlCharacters(t *testing.T) {
	m := func(dsn string) *pgdrv1.Member {
		return &pgdrv1.Member{Cluster: "main", Name: "pg-a1", Region: "us-east-1", Dsn: dsn}
	}
	if err := validMember(m("host=10.0.0.1 port=5432 user=replicator password='a \\' b'")); err != nil {
		t.Fatalf("a valid DSN refused: %v", err)
	}
	for _, dsn := range []string{
		"host=x\\' \narchive_mode = on\narchive_command = true\n#",
		"host=x\rport=1", "host=x\x00", "host=x\tport=1",
	} {
		err := validMember(m(dsn))
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "member.dsn") {
			t.Errorf("validMember with DSN %q = %v, want InvalidArgument about member.dsn", dsn, err)
		}
	}
}
