package storage_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/storage"
)

func TestValidateKey(t *testing.T) {
	for _, k := range []string{"a", "a/b", "wal/00000001/000000010000000000000001", ".hidden", "a/..b", "a b/c"} {
		if err := storage.ValidateKey(k); err != nil {
			t.Errorf("ValidateKey(%q) = %v", k, err)
		}
	}
	for _, k := range []string{"", "/", "/a", "a/", "a//b", ".", "..", "a/./b", "a/../b", `a\b`, "a\x00"} {
		err := storage.ValidateKey(k)
		if !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("ValidateKey(%q) = %v, want ErrInvalidKey", k, err)
		} else if k != "" && !strings.Contains(err.Error(), strconv.Quote(k)) {
			t.Errorf("ValidateKey(%q) error %q does not name the key", k, err)
		}
	}
}

func TestValidatePrefix(t *testing.T) {
	for _, p := range []string{"", "a", "a/", "a/b", "wal/00000001/0000000100000000000000", "a/.x"} {
		if err := storage.ValidatePrefix(p); err != nil {
			t.Errorf("ValidatePrefix(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"/", "/a", "a//", "..", "../", "a/../", "./", `a\`} {
		if err := storage.ValidatePrefix(p); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("ValidatePrefix(%q) = %v, want ErrInvalidKey", p, err)
		}
	}
}

func TestSizeCheckReader(t *testing.T) {
	for _, c := range []struct {
		data    string
		size    int64
		wantErr bool
	}{
		{"", 0, false}, {"abc", 3, false}, {"abc", -1, false},
		{"ab", 3, true}, {"abcd", 3, true}, {"", 1, true}, {"a", 0, true},
	} {
		r := storage.NewSizeCheckReader(strings.NewReader(c.data), c.size)
		got, err := io.ReadAll(r)
		if c.wantErr != errors.Is(err, storage.ErrSizeMismatch) || (!c.wantErr && err != nil) {
			t.Errorf("%q declared %d: err %v, want mismatch %v", c.data, c.size, err, c.wantErr)
		}
		// A long stream is caught one byte past the declared size, not
		// after draining the rest.
		if c.size >= 0 && int64(len(got)) > c.size+1 {
			t.Errorf("%q declared %d: read %d bytes", c.data, c.size, len(got))
		}
		if !c.wantErr && r.N() != int64(len(c.data)) {
			t.Errorf("N() = %d, want %d", r.N(), len(c.data))
		}
	}
}

func TestContextReader(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	r := storage.ContextReader(ctx, bytes.NewReader(make([]byte, 10)))
	if n, err := r.Read(make([]byte, 4)); n != 4 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	cancel()
	if _, err := r.Read(make([]byte, 4)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Read after cancel = %v", err)
	}
}
