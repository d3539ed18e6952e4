package objstream

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
)

func TestGenerateIdentity(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pgdr.key")
	rcptStr, err := GenerateIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("identity file mode %o, want 600", mode)
	}
	content, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(content), "\n"), "\n")
	if len(lines) != 3 ||
		!strings.HasPrefix(lines[0], "# created: ") ||
		lines[1] != "# public key: "+rcptStr ||
		!strings.HasPrefix(lines[2], "AGE-SECRET-KEY-1") {
		t.Fatalf("identity file not in age-keygen format:\n%s", content)
	}
	if _, err := time.Parse(time.RFC3339, strings.TrimPrefix(lines[0], "# created: ")); err != nil {
		t.Errorf("created line: %v", err)
	}
	if !strings.HasPrefix(rcptStr, "age1") {
		t.Errorf("recipient %q", rcptStr)
	}

	// Refuses to overwrite, and leaves the existing key alone.
	if _, err := GenerateIdentity(path); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second GenerateIdentity: err = %v, want fs.ErrExist", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, content) {
		t.Errorf("existing identity file was modified")
	}

	// The recipient decrypts what it encrypts.
	rcpts, err := ParseRecipients([]string{rcptStr})
	if err != nil {
		t.Fatal(err)
	}
	ids, err := LoadIdentities(path)
	if err != nil {
		t.Fatal(err)
	}
	data := walLike(100<<10, 9)
	obj := encode(t, data, Options{Recipients: rcpts, PlainSize: -1})
	got, err := decode(obj, ids)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("roundtrip with generated key: %v", err)
	}
	// And nothing else does.
	other, _ := testKey(t)
	if _, err := decode(obj, []age.Identity{other}); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("other key: %v", err)
	}

	// A missing directory fails cleanly.
	if _, err := GenerateIdentity(filepath.Join(dir, "no", "such", "dir", "k")); err == nil {
		t.Errorf("GenerateIdentity into a missing directory succeeded")
	}
}

func TestLoadIdentitiesErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.key")
	_, err := LoadIdentities(missing)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte("# comment\nnot a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadIdentities(bad)
	if err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("bad file: %v", err)
	}
	empty := filepath.Join(dir, "empty.key")
	if err := os.WriteFile(empty, []byte("# nothing\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadIdentities(empty); err == nil || !strings.Contains(err.Error(), empty) {
		t.Errorf("empty file: %v", err)
	}
	// Several keys, as written by age-keygen, are all loaded.
	id1, _ := testKey(t)
	id2, _ := testKey(t)
	multi := filepath.Join(dir, "multi.key")
	content := "# created: x\n# public key: " + id1.Recipient().String() + "\n" + id1.String() + "\n\n" + id2.String() + "\n"
	if err := os.WriteFile(multi, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	ids, err := LoadIdentities(multi)
	if err != nil || len(ids) != 2 {
		t.Errorf("multi: %d ids, %v", len(ids), err)
	}
}

func TestParseRecipients(t *testing.T) {
	id1, _ := testKey(t)
	id2, _ := testKey(t)
	r1, r2 := id1.Recipient().String(), id2.Recipient().String()
	rcpts, err := ParseRecipients([]string{"# ops team", r1, "", "  " + r2 + "  "})
	if err != nil || len(rcpts) != 2 {
		t.Fatalf("ParseRecipients: %d, %v", len(rcpts), err)
	}
	hybrid, err := age.GenerateHybridIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if rcpts, err := ParseRecipients([]string{hybrid.Recipient().String()}); err != nil || len(rcpts) != 1 {
		t.Errorf("hybrid recipient: %v", err)
	}

	broken := r2[:len(r2)-1] + "q"
	if broken == r2 {
		broken = r2[:len(r2)-1] + "p"
	}
	for _, tc := range []struct {
		lines []string
		want  []string // substrings of the error
		not   string   // must not appear
	}{
		{[]string{r1, broken}, []string{"recipient 2", broken}, ""},
		{[]string{"ssh-ed25519 AAAA"}, []string{"recipient 1", "ssh-ed25519 AAAA"}, ""},
		{[]string{r1, "", "age1notakey"}, []string{"recipient 3", "age1notakey"}, ""},
		{[]string{id1.String()}, []string{"recipient 1", "secret key"}, id1.String()},
		{nil, []string{"no age recipients"}, ""},
		{[]string{"# only a comment", "  "}, []string{"no age recipients"}, ""},
	} {
		_, err := ParseRecipients(tc.lines)
		if err == nil {
			t.Errorf("ParseRecipients(%q) succeeded", tc.lines)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("ParseRecipients(%q): error %q lacks %q", tc.lines, err, w)
			}
		}
		if tc.not != "" && strings.Contains(err.Error(), tc.not) {
			t.Errorf("error leaks a secret key: %q", err)
		}
	}
}
