package walship

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/keys"
	"github.com/pgdr/pgdr/pkg/objstream"
)

// reader returns a Shipper on f's repository and identity whose
// configuration ends with signing.
func (f *fixture) reader(t *testing.T, signing string) *Shipper {
	t.Helper()
	y := fmt.Sprintf("cluster: c1\nnode: {name: n1}\npostgres: {pgdata: %s}\nrepos: [{name: r1, url: 'file://%s'}]\nencryption: {identity_file: %s}\n%s",
		f.pgdata, f.repo, f.identity, signing)
	cfg, err := config.Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	sh, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return sh
}

func signingKey(t *testing.T) (path, pub string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "signing.key")
	pk, err := objstream.GenerateSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, pk.String()
}

// TestSignedPushAndFetch: with signing configured, pushed WAL is signed;
// a reader trusting the key (alone, or among others after a rotation)
// fetches it, a reader trusting another key refuses it naming the object
// and the key, a re-push of the same file is still recognised as
// identical, and unsigned WAL is refused unless signing.require is false.
func TestSignedPushAndFetch(t *testing.T) {
	ctx := context.Background()
	key, pub := signingKey(t)
	_, otherPub := signingKey(t)
	f := newFixture(t, fmt.Sprintf("signing: {key_file: %s}\n", key))
	name, data := f.segment(t, 1)
	if err := f.sh.PushWith(ctx, filepath.Join(f.pgwal, name), PushOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	// Identical re-push: success, nothing overwritten.
	if err := f.sh.PushWith(ctx, filepath.Join(f.pgwal, name), PushOptions{Force: true}); err != nil {
		t.Fatalf("re-pushing the same signed segment: %v", err)
	}
	fetch := func(sh *Shipper) error {
		dest := filepath.Join(t.TempDir(), name)
		if err := sh.Fetch(ctx, name, dest); err != nil {
			return err
		}
		if got, err := os.ReadFile(dest); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("fetched %d bytes (%v), want the %d pushed", len(got), err, len(data))
		}
		return nil
	}
	for _, sg := range []string{
		fmt.Sprintf("signing: {public_keys: [%q]}\n", pub),
		fmt.Sprintf("signing: {public_keys: [%q, %q]}\n", otherPub, pub),
	} {
		if err := fetch(f.reader(t, sg)); err != nil {
			t.Fatalf("fetch with %s: %v", strings.TrimSpace(sg), err)
		}
	}
	err := fetch(f.reader(t, fmt.Sprintf("signing: {public_keys: [%q]}\n", otherPub)))
	if !errors.Is(err, objstream.ErrBadSignature) || !strings.Contains(err.Error(), name) {
		t.Fatalf("fetch trusting another key: %v, want ErrBadSignature naming %s", err, name)
	}
	t.Log(err)

	// A writer without signing: its WAL is refused where signing is
	// required, read where require is false.
	u := newFixture(t, "")
	uname, _ := u.segment(t, 1)
	if err := u.sh.PushWith(ctx, filepath.Join(u.pgwal, uname), PushOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	err = u.reader(t, fmt.Sprintf("signing: {public_keys: [%q]}\n", pub)).Fetch(ctx, uname, filepath.Join(t.TempDir(), uname))
	if !errors.Is(err, objstream.ErrUnsigned) {
		t.Fatalf("fetch of unsigned WAL with signing required: %v, want ErrUnsigned", err)
	}
	if err := u.reader(t, fmt.Sprintf("signing: {public_keys: [%q], require: false}\n", pub)).Fetch(ctx, uname, filepath.Join(t.TempDir(), uname)); err != nil {
		t.Fatalf("fetch of unsigned WAL with require false: %v", err)
	}

	// A writer configured with public keys but no key file refuses to
	// push what every reader would refuse.
	w := newFixture(t, fmt.Sprintf("signing: {public_keys: [%q]}\n", pub))
	wname, _ := w.segment(t, 1)
	if err := w.sh.PushWith(ctx, filepath.Join(w.pgwal, wname), PushOptions{Force: true}); !errors.Is(err, keys.ErrNoSigningKey) {
		t.Fatalf("push without signing.key_file: %v, want ErrNoSigningKey", err)
	}
	if w.stored(wname) {
		t.Fatal("an unsigned segment was stored")
	}
}
