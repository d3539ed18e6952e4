package backup

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage/filestore"
)

func testSigner(t *testing.T) *objstream.Signer {
	t.Helper()
	path := filepath.Join(t.TempDir(), "signing.key")
	if _, err := objstream.GenerateSigningKey(path); err != nil {
		t.Fatal(err)
	}
	s, err := objstream.LoadSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestManifestSignature: a manifest written with the writers' key loads
// where that key is trusted; one rewritten without a signature, one
// re-signed with another key and a genuine one copied under another
// backup's ID are refused, naming the manifest and the key.
func TestManifestSignature(t *testing.T) {
	ctx := context.Background()
	st, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	good, evil := testSigner(t), testSigner(t)
	v, err := objstream.NewVerifier([]objstream.PublicKey{good.Public()}, true)
	if err != nil {
		t.Fatal(err)
	}
	r := repo.Repo{Name: "r1", Store: st, Verifier: v}
	const id, other = "20261126T081700F", "20261126T091700F"
	m := &Manifest{Format: ManifestFormat, ID: id, Type: TypeFull, Cluster: "c", StartTime: time.Now(),
		Files: []File{{Path: "PG_VERSION", Size: 3, Kind: KindFull, Object: "backup/" + id + "/pgdata/PG_VERSION", SHA256: strings.Repeat("ab", 32)}}}
	if err := saveManifest(ctx, r, m, good); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadManifest(ctx, r, "c", id); err != nil || got.Files[0].SHA256 != m.Files[0].SHA256 {
		t.Fatalf("loading the signed manifest: %v", err)
	}

	forged := *m
	forged.Files = []File{{Path: "PG_VERSION", Size: 3, Kind: KindFull, Object: m.Files[0].Object, SHA256: strings.Repeat("cd", 32)}}
	for _, tc := range []struct {
		name   string
		signer *objstream.Signer
		want   error
		msg    string
	}{
		{"checksums rewritten, unsigned", nil, objstream.ErrUnsigned, "backup.manifest"},
		{"re-signed with another key", evil, objstream.ErrBadSignature, evil.Public().ID()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := saveManifest(ctx, repo.Repo{Name: "r1", Store: st}, &forged, tc.signer); err != nil {
				t.Fatal(err)
			}
			_, err := LoadManifest(ctx, r, "c", id)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), id) {
				t.Fatalf("LoadManifest: %v, want %v naming %s and %q", err, tc.want, id, tc.msg)
			}
			t.Log(err)
		})
	}

	// A genuine manifest replayed under another backup's name.
	if err := saveManifest(ctx, r, m, good); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(st.Root(), filepath.FromSlash(manifestKey("c", id))))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, manifestKey("c", other), bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadManifest(ctx, r, "c", other); !errors.Is(err, objstream.ErrBadSignature) || !strings.Contains(err.Error(), other) {
		t.Fatalf("a manifest replayed under backup %s: %v, want ErrBadSignature", other, err)
	}
}
