package expire

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
)

// Pin keeps one backup from ever being expired.
type Pin struct {
	ID   string    `json:"id"`
	Note string    `json:"note"`
	Time time.Time `json:"time"`
	Node string    `json:"node,omitempty"`
	// Signed is set when the pin object carried a signature the
	// repository's Verifier checked. An unsigned or unreadable pin still
	// pins: it can only keep more. Never stored.
	Signed bool `json:"-"`
	// Repos names the repositories holding the pin. Never stored.
	Repos []string `json:"-"`
}

// MaxNoteLen bounds a pin's note.
const MaxNoteLen = 1000

// PinPrefix is where the pins of cluster live.
func PinPrefix(cluster string) string { return cluster + "/pins/" }

// PinKey is the key of backup id's pin.
func PinKey(cluster, id string) string { return PinPrefix(cluster) + id + ".pin" }

// ErrNoBackup means the backup to pin is in no repository.
var ErrNoBackup = errors.New("no such backup")

// SetPin pins backup id with note in every repository (signed by signer
// when it is not nil), so that one repository losing its pin object does
// not unpin it: LoadPins takes a pin from any repository. The backup must
// exist (have a manifest) in at least one repository.
func SetPin(ctx context.Context, repos []repo.Repo, signer *objstream.Signer, cluster, node, id, note string, now time.Time) (*Pin, error) {
	if !backup.ValidID(id) {
		return nil, fmt.Errorf("%q is not a backup ID (like 20261126T081700F)", id)
	}
	if len(note) > MaxNoteLen || !utf8.ValidString(note) || strings.ContainsAny(note, "\x00\r\n") {
		return nil, fmt.Errorf("note: at most %d characters of one line of UTF-8 text", MaxNoteLen)
	}
	found := false
	for _, r := range repos {
		if _, err := r.Store.Stat(ctx, backup.ManifestKey(cluster, id)); err == nil {
			found = true
		} else if !errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("repository %s: backup %s: %w", r.Name, id, err)
		}
	}
	if !found {
		return nil, fmt.Errorf("backup %s: %w in any repository", id, ErrNoBackup)
	}
	p := &Pin{ID: id, Note: note, Time: now.UTC(), Node: node}
	body, err := json.MarshalIndent(p, "", " ")
	if err != nil {
		return nil, err
	}
	key := PinKey(cluster, id)
	sum := sha256.Sum256(body)
	var buf bytes.Buffer
	w, err := objstream.NewWriter(&buf, objstream.Options{Compression: objstream.CompressionNone, Unencrypted: true,
		PlainSize: int64(len(body)), PlainSHA256: sum[:], Signer: signer, Name: key})
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(body); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	for _, r := range repos {
		if err := r.Store.Put(ctx, key, bytes.NewReader(buf.Bytes()), int64(buf.Len())); err != nil {
			return nil, fmt.Errorf("repository %s: writing pin %s: %w", r.Name, key, err)
		}
		p.Repos = append(p.Repos, r.Name)
	}
	p.Signed = signer != nil
	return p, nil
}

// Unpin removes backup id's pin from every repository. Removing a pin
// that is not there is not an error.
func Unpin(ctx context.Context, repos []repo.Repo, cluster, id string) error {
	if !backup.ValidID(id) {
		return fmt.Errorf("%q is not a backup ID (like 20261126T081700F)", id)
	}
	for _, r := range repos {
		if err := r.Store.Delete(ctx, PinKey(cluster, id)); err != nil {
			return fmt.Errorf("repository %s: removing pin of %s: %w", r.Name, id, err)
		}
	}
	return nil
}

// LoadPins returns the pins found in any of repos, by backup ID. A pin
// object that cannot be read, is unsigned or fails its signature still
// pins its backup (its note says why it is doubtful): a forged pin can
// only keep more, never less.
func LoadPins(ctx context.Context, repos []repo.Repo, cluster string) (map[string]*Pin, error) {
	pins := map[string]*Pin{}
	for _, r := range repos {
		var keys []string
		err := r.Store.List(ctx, PinPrefix(cluster), func(oi storage.ObjectInfo) error {
			keys = append(keys, oi.Key)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("repository %s: listing pins: %w", r.Name, err)
		}
		for _, key := range keys {
			id, ok := strings.CutSuffix(strings.TrimPrefix(key, PinPrefix(cluster)), ".pin")
			if !ok || !backup.ValidID(id) {
				continue
			}
			p, err := readPin(ctx, r, key)
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				p = &Pin{ID: id, Note: "(pin object unreadable: " + err.Error() + ")"}
			}
			if p.ID != id {
				p = &Pin{ID: id, Note: fmt.Sprintf("(pin object names backup %s)", p.ID)}
			}
			if old, ok := pins[id]; ok {
				if !old.Signed && p.Signed {
					p.Repos = old.Repos
					pins[id] = p
					old = p
				}
				old.Repos = append(old.Repos, r.Name)
				continue
			}
			p.Repos = []string{r.Name}
			pins[id] = p
		}
	}
	for _, p := range pins {
		sort.Strings(p.Repos)
	}
	return pins, nil
}

func readPin(ctx context.Context, r repo.Repo, key string) (*Pin, error) {
	rc, err := r.Store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	or, err := objstream.NewReaderOpts(rc, r.SignedReadOptions(key, nil, false))
	if err != nil {
		return nil, err
	}
	defer or.Close()
	b, err := io.ReadAll(io.LimitReader(or, 64<<10))
	if err != nil {
		return nil, err
	}
	var p Pin
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, err
	}
	p.Signed = r.Verifier != nil && or.Header.Signature != nil
	return &p, nil
}
