package restore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"filippo.io/age"

	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/wal"
)

// sealed is data sealed by objstream for id, signed by sg (unsigned when nil).
func sealed(t *testing.T, id *age.X25519Identity, data []byte, sg *objstream.Signer, name string) []byte {
	var buf bytes.Buffer
	sum := sha256.Sum256(data)
	w, err := objstream.NewWriter(&buf, objstream.Options{Recipients: []age.Recipient{id.Recipient()}, PlainSize: int64(len(data)), PlainSHA256: sum[:], Signer: sg, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// headerLen is the length of a sealed object's header (the signed part).
func headerLen(b []byte) int { return 12 + int(binary.BigEndian.Uint32(b[8:12])) + 4 }

func TestArchivedFileNotSplicedAcrossRepositories(t *testing.T) {
	id, _ := age.GenerateX25519Identity()
	kf := filepath.Join(t.TempDir(), "k")
	pk, err := objstream.GenerateSigningKey(kf)
	if err != nil {
		t.Fatal(err)
	}
	sg, _ := objstream.LoadSigner(kf)
	v, _ := objstream.NewVerifier([]objstream.PublicKey{pk}, true)
	name := "00000002.history"
	key := repo.WALKey("main", name)
	genuine := []byte("1\t0/3000000\tno recovery target specified\n")
	forged := []byte("1\t0/9000000\tno recovery target specified\n")
	g := sealed(t, id, genuine, sg, key)
	f := sealed(t, id, forged, nil, "")
	evil := append(append([]byte{}, g[:headerLen(g)]...), f[headerLen(f):]...)
	a1 := newTestArchive(t, "attacked", id)
	a2 := newTestArchive(t, "second", id)
	a1.store.Put(context.Background(), key, bytes.NewReader(evil), int64(len(evil)))
	a2.store.Put(context.Background(), key, bytes.NewReader(g), int64(len(g)))
	r1, r2 := a1.repo, a2.repo
	r1.Verifier, r2.Verifier = v, v
	r1.RequireEncrypted, r2.RequireEncrypted = true, true
	a := &walArchive{cluster: "main", repos: []repo.Repo{r1, r2}, ids: []age.Identity{id}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	rc, err := a.open(context.Background(), name, maxHistoryFile)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	t.Logf("read %q err=%v", b, err)
	if err == nil && bytes.Equal(b, forged) {
		t.Fatalf("a forged history joined to another repository's verification was accepted")
	}
	// The second repository's copy, read from its start, replaces the bad one.
	if err != nil || !bytes.Equal(b, genuine) {
		t.Errorf("read %q, %v; want the second repository's genuine copy", b, err)
	}
}

func TestForgedSegmentBodyDoesNotHideFork(t *testing.T) {
	id, _ := age.GenerateX25519Identity()
	kf := filepath.Join(t.TempDir(), "k")
	pk, _ := objstream.GenerateSigningKey(kf)
	sg, _ := objstream.LoadSigner(kf)
	v, _ := objstream.NewVerifier([]objstream.PublicKey{pk}, true)
	arch := newTestArchive(t, "local", id)
	arch.repo.Verifier, arch.repo.RequireEncrypted = v, true
	put := func(name string, data []byte, signed bool) []byte {
		key := repo.WALKey("main", name)
		var b []byte
		if signed {
			b = sealed(t, id, data, sg, key)
		} else {
			b = sealed(t, id, data, nil, "")
		}
		arch.store.Put(context.Background(), key, bytes.NewReader(b), int64(len(b)))
		return b
	}
	w1 := newFakeWAL()
	bstart, _ := w1.add(1, 0, []byte("start"))
	_, bstop := w1.add(0, 0, []byte("end"))
	w1.fill(15)
	switchAt := wal.LSN(w1.pos)
	w2 := w1.fork(2)
	w2.add(0, 0x90, []byte("end of recovery"))
	w2.fill(12)
	sw := uint64(switchAt) / fakeSegSize
	clean := append([]byte{}, w1.segs[sw]...)
	w1.add(0, 0, []byte("the old primary goes on")) // real fork
	for s, b := range w1.segs {
		if s >= 1 {
			put(wal.SegmentName(1, s, fakeSegSize), b, true)
		}
	}
	for s, b := range w2.segs {
		if s >= sw {
			put(wal.SegmentName(2, s, fakeSegSize), b, true)
		}
	}
	put("00000002.history", fmt.Appendf(nil, "1\t%s\tno recovery target specified\n", switchAt), true)
	d := testDeps(t, id, arch)
	d.Repos[0] = arch.repo
	B := testBackup("20261126T080000F", 1, bstart, bstop)
	_, err := choose(t, d, B, "", 0)
	t.Logf("genuine fork: %v", err)
	if err == nil {
		t.Fatal("expected fork refusal")
	}
	// Attacker: genuine signed header of the switch segment + a body without the records after the switch.
	name := wal.SegmentName(1, sw, fakeSegSize)
	key := repo.WALKey("main", name)
	g := sealed(t, id, w1.segs[sw], sg, key)
	f := sealed(t, id, clean, nil, "")
	evil := append(append([]byte{}, g[:headerLen(g)]...), f[headerLen(f):]...)
	arch.store.Put(context.Background(), key, bytes.NewReader(evil), int64(len(evil)))
	got, err := choose(t, d, B, "", 0)
	t.Logf("after forgery: timeline %d err %v", got, err)
	if err == nil {
		t.Errorf("a forged segment body hid the fork: restore follows timeline %d", got)
	}
}

func TestSpliceAcrossRepositoriesDoesNotHideFork(t *testing.T) {
	id, _ := age.GenerateX25519Identity()
	kf := filepath.Join(t.TempDir(), "k")
	pk, _ := objstream.GenerateSigningKey(kf)
	sg, _ := objstream.LoadSigner(kf)
	v, _ := objstream.NewVerifier([]objstream.PublicKey{pk}, true)
	a1 := newTestArchive(t, "attacked", id)
	a2 := newTestArchive(t, "second", id)
	put := func(name string, data []byte) {
		key := repo.WALKey("main", name)
		b := sealed(t, id, data, sg, key)
		for _, a := range []*testArchive{a1, a2} {
			a.store.Put(context.Background(), key, bytes.NewReader(b), int64(len(b)))
		}
	}
	w1 := newFakeWAL()
	bstart, _ := w1.add(1, 0, []byte("start"))
	_, bstop := w1.add(0, 0, []byte("end"))
	w1.fill(15)
	switchAt := wal.LSN(w1.pos)
	w2 := w1.fork(2)
	w2.add(0, 0x90, []byte("end of recovery"))
	w2.fill(12)
	sw := uint64(switchAt) / fakeSegSize
	clean := append([]byte{}, w1.segs[sw]...)
	w1.add(0, 0, []byte("the old primary goes on"))
	for s, b := range w1.segs {
		if s >= 1 {
			put(wal.SegmentName(1, s, fakeSegSize), b)
		}
	}
	for s, b := range w2.segs {
		if s >= sw {
			put(wal.SegmentName(2, s, fakeSegSize), b)
		}
	}
	put("00000002.history", fmt.Appendf(nil, "1\t%s\tno recovery target specified\n", switchAt))
	r1, r2 := a1.repo, a2.repo
	r1.Verifier, r2.Verifier = v, v
	r1.RequireEncrypted, r2.RequireEncrypted = true, true
	d := testDeps(t, id, a1, a2)
	d.Repos = []repo.Repo{r1, r2}
	B := testBackup("20261126T080000F", 1, bstart, bstop)
	if _, err := choose(t, d, B, "", 0); err == nil {
		t.Fatal("expected fork refusal")
	}
	name := wal.SegmentName(1, sw, fakeSegSize)
	key := repo.WALKey("main", name)
	g := sealed(t, id, w1.segs[sw], sg, key)
	f := sealed(t, id, clean, nil, "")
	evil := append(append([]byte{}, g[:headerLen(g)]...), f[headerLen(f):]...)
	a1.store.Put(context.Background(), key, bytes.NewReader(evil), int64(len(evil)))
	got, err := choose(t, d, B, "", 0)
	t.Logf("after forging repo 1 only: timeline %d err %v", got, err)
	if err == nil {
		t.Errorf("a copy spliced across repositories hid the fork: restore silently follows timeline %d", got)
	}
}
