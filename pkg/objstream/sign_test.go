package objstream

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
)

// newSigner makes a signing key in a temporary file and loads it back.
func newSigner(t *testing.T) *Signer {
	t.Helper()
	path := filepath.Join(t.TempDir(), "signing.key")
	pk, err := GenerateSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Public().String() != pk.String() || s.Public().ID() != pk.ID() {
		t.Fatalf("loaded key %s (%s), generated %s (%s)", s.Public(), s.Public().ID(), pk, pk.ID())
	}
	return s
}

// writeSigned writes plain as a signed object called name.
func writeSigned(t *testing.T, plain []byte, name string, s *Signer, rs []age.Recipient) []byte {
	t.Helper()
	sum := sha256.Sum256(plain)
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Options{Recipients: rs, Unencrypted: len(rs) == 0, PlainSize: int64(len(plain)), PlainSHA256: sum[:], Signer: s, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// plainObject writes plain with opts.
func plainObject(t *testing.T, plain []byte, opts Options) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readOpts(obj []byte, opts ReadOptions) ([]byte, error) {
	r, err := NewReaderOpts(bytes.NewReader(obj), opts)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func verifier(t *testing.T, require bool, keys ...PublicKey) *Verifier {
	t.Helper()
	v, err := NewVerifier(keys, require)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestUnencryptedRefused: where encryption is configured, an object whose
// header says encryption: none (which anyone who can write to the bucket
// can make) is refused before any plaintext is returned.
func TestUnencryptedRefused(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte("forged WAL")
	obj := plainObject(t, plain, Options{Unencrypted: true, PlainSize: -1})
	_, err = readOpts(obj, ReadOptions{Identities: []age.Identity{id}, RequireEncrypted: true, Name: "c/wal/00000001/000000010000000000000003"})
	if !errors.Is(err, ErrUnencrypted) || !strings.Contains(err.Error(), "000000010000000000000003") {
		t.Fatalf("unencrypted object with encryption configured: %v, want ErrUnencrypted naming the object", err)
	}
	t.Log(err)
	// Encrypted objects still read; without the requirement an
	// unencrypted one does too.
	enc := plainObject(t, plain, Options{Recipients: []age.Recipient{id.Recipient()}, PlainSize: -1})
	if got, err := readOpts(enc, ReadOptions{Identities: []age.Identity{id}, RequireEncrypted: true}); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("encrypted object: %q, %v", got, err)
	}
	if got, err := readOpts(obj, ReadOptions{}); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("unencrypted object, encryption not configured: %q, %v", got, err)
	}
}

// TestSignedObjects: a signed object reads with a verifier trusting its
// key (or one of several, for rotation); a forged one (unsigned, rewritten
// checksums with the old signature, re-signed with another key, or a
// genuine one stored under another name) is refused with an error naming
// the object and the key.
func TestSignedObjects(t *testing.T) {
	oldKey, curKey, evil := newSigner(t), newSigner(t), newSigner(t)
	const name = "c/wal/00000001/000000010000000000000003"
	plain := bytes.Repeat([]byte("genuine WAL "), 1000)
	trusted := verifier(t, true, oldKey.Public(), curKey.Public())

	for _, s := range []*Signer{oldKey, curKey} {
		obj := writeSigned(t, plain, name, s, nil)
		got, err := readOpts(obj, ReadOptions{Verifier: trusted, Name: name})
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("signed by trusted key %s: %v", s.Public().ID(), err)
		}
		h, err := ReadHeader(bytes.NewReader(obj))
		if err != nil || h.SignerID != s.Public().ID() {
			t.Fatalf("header signer %q, %v; want %s", h.SignerID, err, s.Public().ID())
		}
	}

	forgedPlain := bytes.Repeat([]byte("forged WAL!!"), 1000)
	genuine := writeSigned(t, plain, name, curKey, nil)
	for _, tc := range []struct {
		name string
		obj  []byte
		want error
		msg  []string
	}{
		{"unsigned", plainObject(t, forgedPlain, Options{Unencrypted: true, PlainSize: -1}), ErrUnsigned, []string{name}},
		{"re-signed with another key", writeSigned(t, forgedPlain, name, evil, nil), ErrBadSignature, []string{name, evil.Public().ID()}},
		{"checksums rewritten", rewriteSums(t, genuine, forgedPlain), ErrBadSignature, []string{name, curKey.Public().ID()}},
		{"genuine object under another name", writeSigned(t, plain, "c/wal/00000001/000000010000000000000002", curKey, nil), ErrBadSignature, []string{name}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readOpts(tc.obj, ReadOptions{Verifier: trusted, Name: name})
			if !errors.Is(err, tc.want) || got != nil {
				t.Fatalf("read %d bytes, err %v; want %v", len(got), err, tc.want)
			}
			for _, m := range tc.msg {
				if !strings.Contains(err.Error(), m) {
					t.Fatalf("error %q does not name %q", err, m)
				}
			}
			t.Log(err)
		})
	}

	// require: false reads unsigned objects (a repository written before
	// signing), but still refuses a bad signature.
	lax := verifier(t, false, curKey.Public())
	if _, err := readOpts(plainObject(t, plain, Options{Unencrypted: true, PlainSize: -1}), ReadOptions{Verifier: lax, Name: name}); err != nil {
		t.Fatalf("unsigned with require false: %v", err)
	}
	if _, err := readOpts(writeSigned(t, plain, name, evil, nil), ReadOptions{Verifier: lax, Name: name}); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("wrong key with require false: %v", err)
	}

	// Signed and encrypted: both checks apply.
	id, _ := age.GenerateX25519Identity()
	enc := writeSigned(t, plain, name, curKey, []age.Recipient{id.Recipient()})
	if got, err := readOpts(enc, ReadOptions{Identities: []age.Identity{id}, RequireEncrypted: true, Verifier: trusted, Name: name}); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("signed and encrypted: %v", err)
	}

	// A signed object needs its identity up front.
	if _, err := NewWriter(io.Discard, Options{Unencrypted: true, PlainSize: -1, Signer: curKey, Name: name}); err == nil {
		t.Fatal("signing without PlainSize and PlainSHA256 was accepted")
	}
}

// rewriteSums returns obj's header, with plain_size and plain_sha256
// rewritten to forged's and the CRC recomputed (what a bucket writer
// can do), followed by a body holding forged.
func rewriteSums(t *testing.T, obj, forged []byte) []byte {
	t.Helper()
	n := binary.BigEndian.Uint32(obj[len(magic)+1:])
	var hj map[string]any
	if err := json.Unmarshal(obj[prefixSize:prefixSize+int(n)], &hj); err != nil {
		t.Fatal(err)
	}
	if hj["signature"] == nil {
		t.Fatal("the genuine object has no signature")
	}
	// A body with forged content, unsigned, from which the header is
	// replaced.
	body := plainObject(t, forged, Options{Unencrypted: true, PlainSize: -1})
	bn := binary.BigEndian.Uint32(body[len(magic)+1:])
	sum := sha256.Sum256(forged)
	hj["plain_size"] = len(forged)
	hj["plain_sha256"] = hexString(sum[:])
	js, err := json.Marshal(hj)
	if err != nil {
		t.Fatal(err)
	}
	out := append([]byte(nil), obj[:len(magic)+1]...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(js)))
	out = append(out, js...)
	out = binary.BigEndian.AppendUint32(out, crc32c(out))
	return append(out, body[prefixSize+int(bn)+crcSize:]...)
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// TestSigningKeyFiles: public keys parse back, secret keys are refused
// where a public key is wanted, and key files are never overwritten.
func TestSigningKeyFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k")
	pk, err := GenerateSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", fi.Mode(), err)
	}
	if _, err := GenerateSigningKey(path); err == nil {
		t.Fatal("an existing key file was overwritten")
	}
	back, err := ParsePublicKey(pk.String())
	if err != nil || back.ID() != pk.ID() {
		t.Fatalf("ParsePublicKey(%s): %v, %v", pk, back.ID(), err)
	}
	b, _ := os.ReadFile(path)
	for _, bad := range []string{"", "age1xyz", "pgdr-ed25519:AAAA", strings.TrimSpace(lastLine(string(b)))} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Fatalf("ParsePublicKey(%q) accepted", bad)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "bad"), []byte("# nothing\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSigner(filepath.Join(dir, "bad")); err == nil || !strings.Contains(err.Error(), "bad") {
		t.Fatalf("LoadSigner of a file without a key: %v", err)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
