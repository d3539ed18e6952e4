package orders

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/conninfo"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// injectingDSN is the DSN of issue 13 item 4: quoted by doubling ' alone,
// its backslash escapes the closing quote and its newlines start settings
// of their own in postgresql.auto.conf — here an archive_command that
// reports every segment archived while keeping none.
const injectingDSN = "host=x\\' \narchive_mode = on\narchive_command = true\n#"

// gucSetting is one name = value line as PostgreSQL reads it.
type gucSetting struct{ name, value string }

// parseGUCFile reads a configuration file the way PostgreSQL 15's
// guc-file.l does: per line an optional "name [=] value" and a comment;
// a quoted value is '([^'\\\n]|\\.|”)*' (a newline never inside), with
// \b \f \n \r \t, up to three octal digits and any other escaped character
// de-escaped, and ” read as '. Any other shape is an error, as PostgreSQL
// rejects the whole file then.
func parseGUCFile(s string) ([]gucSetting, error) {
	var out []gucSetting
	for ln, line := range strings.Split(s, "\n") {
		i := 0
		skip := func() {
			for i < len(line) && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r' || line[i] == '\f') {
				i++
			}
		}
		atEnd := func() bool { skip(); return i == len(line) || line[i] == '#' }
		if atEnd() {
			continue
		}
		isID := func(c byte, first bool) bool {
			return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80 ||
				!first && (c >= '0' && c <= '9' || c == '$' || c == '.')
		}
		start := i
		for i < len(line) && isID(line[i], i == start) {
			i++
		}
		if i == start {
			return nil, fmt.Errorf("line %d: no setting name", ln+1)
		}
		name := line[start:i]
		skip()
		if i < len(line) && line[i] == '=' {
			i++
		}
		skip()
		if i == len(line) {
			return nil, fmt.Errorf("line %d: no value", ln+1)
		}
		var val strings.Builder
		if line[i] == '\'' {
			i++
			closed := false
			for i < len(line) && !closed {
				switch c := line[i]; {
				case c == '\'' && i+1 < len(line) && line[i+1] == '\'':
					val.WriteByte('\'')
					i += 2
				case c == '\'':
					closed = true
					i++
				case c == '\\' && i+1 < len(line):
					e := line[i+1]
					i += 2
					switch {
					case e == 'b':
						val.WriteByte('\b')
					case e == 'f':
						val.WriteByte('\f')
					case e == 'n':
						val.WriteByte('\n')
					case e == 'r':
						val.WriteByte('\r')
					case e == 't':
						val.WriteByte('\t')
					case e >= '0' && e <= '7':
						o := int(e - '0')
						for k := 0; k < 2 && i < len(line) && line[i] >= '0' && line[i] <= '7'; k++ {
							o = o*8 + int(line[i]-'0')
							i++
						}
						val.WriteByte(byte(o))
					default:
						val.WriteByte(e)
					}
				case c == '\\':
					return nil, fmt.Errorf("line %d: a backslash ends the line inside a quoted value", ln+1)
				default:
					val.WriteByte(c)
					i++
				}
			}
			if !closed {
				return nil, fmt.Errorf("line %d: unterminated quoted value", ln+1)
			}
		} else {
			start := i
			for i < len(line) && line[i] != ' ' && line[i] != '\t' && line[i] != '#' && line[i] != '\'' {
				i++
			}
			val.WriteString(line[start:i])
		}
		if !atEnd() {
			return nil, fmt.Errorf("line %d: more after the value of %s", ln+1, name)
		}
		out = append(out, gucSetting{name, val.String()})
	}
	return out, nil
}

// TestParseGUCFile checks the test's parser on what PostgreSQL documents.
func TestParseGUCFile(t *testing.T) {
	got, err := parseGUCFile("# c\na = 'x''y\\\\z\\n\\101' # c\nb 1\n\nc='it'\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := []gucSetting{{"a", "x'y\\z\nA"}, {"b", "1"}, {"c", "it"}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("parsed %q, want %q", got, want)
	}
	for _, bad := range []string{"a = 'x", "a = 'x\\", "a = 'x' y", "= 1"} {
		if _, err := parseGUCFile(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestStandbyConfigRefusesInjectingDSN: the DSN that set archive_mode and
// archive_command on rejoin is refused, by the order before anything is
// stopped, and by WriteStandbyConfig before anything is written (issue 13
// item 4).
func TestStandbyConfigRefusesInjectingDSN(t *testing.T) {
	pgdata := t.TempDir()
	auto := filepath.Join(pgdata, "postgresql.auto.conf")
	const before = "work_mem = '8MB'\n"
	if err := os.WriteFile(auto, []byte(before), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Cluster: "main", Node: config.Node{Name: "pg-a1"}, Postgres: config.Postgres{PGData: pgdata}}
	pg := pgctl.New(pgctl.Config{BinDir: cfg.Postgres.BinDir, PGData: cfg.Postgres.PGData, DSN: cfg.Postgres.DSN})
	x := New(cfg, Deps{PG: pg})
	err := WriteStandbyConfig(cfg, pg, 3, injectingDSN)
	if err == nil {
		b, _ := os.ReadFile(auto)
		settings, perr := parseGUCFile(string(b))
		t.Fatalf("WriteStandbyConfig accepted the DSN and wrote\n%s\nwhich PostgreSQL reads as %q (%v)", b, settings, perr)
	}
	if !errors.Is(err, conninfo.ErrInvalid) {
		t.Fatalf("WriteStandbyConfig = %v, want a refusal of the DSN", err)
	}
	if b, _ := os.ReadFile(auto); string(b) != before {
		t.Fatalf("postgresql.auto.conf changed to %q", b)
	}
	if _, err := os.Stat(filepath.Join(pgdata, "standby.signal")); err == nil {
		t.Fatal("standby.signal written")
	}
	for name, order := range map[string]func() (string, error){
		"rejoin": func() (string, error) { return x.rejoin(t.Context(), "cmd-1", 3, "pg-a2", injectingDSN) },
		"follow": func() (string, error) { return x.follow(t.Context(), "pg-a2", injectingDSN) },
	} {
		if _, err := order(); !errors.Is(err, conninfo.ErrInvalid) {
			t.Errorf("%s with the DSN = %v, want a refusal of the DSN", name, err)
		}
	}
}

// confQuoteInputs are values meant to break out of a quoted setting.
var confQuoteInputs = []string{
	"", "plain", "it's", "''", "\\", "\\'", "'\\", "a\\\\'b", injectingDSN, "x\nrestore_command = 'evil'", "\r\n#", "\x00", "\t\b\f\x7f",
	"host=x\\", "# not a comment", "é\\'ü", strings.Repeat("\\'", 50),
}

// TestConfQuoteCannotAddSetting: whatever the value, the line
// "primary_conninfo = " + confQuote(value) is one setting, read back as
// the value itself.
func TestConfQuoteCannotAddSetting(t *testing.T) {
	inputs := append([]string(nil), confQuoteInputs...)
	rng := rand.New(rand.NewPCG(13, 4))
	alphabet := []byte("a'\\\n\r\t#= \x00\x7fé")
	for range 2000 {
		b := make([]byte, rng.IntN(20))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		inputs = append(inputs, string(b))
	}
	for _, v := range inputs {
		line := "primary_conninfo = " + confQuote(v)
		got, err := parseGUCFile(line + "\nrecovery_target_timeline = 'latest'\n")
		if err != nil {
			t.Fatalf("value %q written as %q: PostgreSQL rejects it: %v", v, line, err)
		}
		if len(got) != 2 || got[0].name != "primary_conninfo" || got[1].name != "recovery_target_timeline" {
			t.Fatalf("value %q written as %q reads as the settings %q", v, line, got)
		}
		// PostgreSQL's strings are C strings: they end at a NUL.
		want, _, _ := strings.Cut(v, "\x00")
		if read, _, _ := strings.Cut(got[0].value, "\x00"); read != want {
			t.Fatalf("value %q written as %q reads back as %q", v, line, got[0].value)
		}
	}
}

// TestConfQuoteWithPostgres: PostgreSQL itself (postgres -C) reads every
// value quoted by confQuote back unchanged, and no other setting.
func TestConfQuoteWithPostgres(t *testing.T) {
	bin := filepath.Join(pgtest.DefaultBinDir, "postgres")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no PostgreSQL at %s", bin)
	}
	dir := pgtest.OwnedDir(t, "confquote-")
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "postgresql.conf")
	if err := os.WriteFile(conf, []byte("archive_mode = off\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pgtest.Chown(t, conf)
	for _, v := range confQuoteInputs {
		if strings.ContainsAny(v, "\x00") {
			continue // a C string: PostgreSQL ends it there
		}
		auto := filepath.Join(dir, "postgresql.auto.conf")
		if err := os.WriteFile(auto, []byte("primary_conninfo = "+confQuote(v)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		pgtest.Chown(t, auto)
		for name, want := range map[string]string{"primary_conninfo": v, "archive_mode": "off", "restore_command": ""} {
			cmd := exec.Command(bin, "-D", dir, "-C", name)
			if cred := pgtest.Credential(t); cred != nil {
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
			}
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("value %q: postgres -C %s: %v", v, name, err)
			}
			if got := strings.TrimSuffix(string(out), "\n"); got != want {
				t.Fatalf("value %q written as %q: PostgreSQL reads %s as %q, want %q", v, confQuote(v), name, got, want)
			}
		}
	}
}
