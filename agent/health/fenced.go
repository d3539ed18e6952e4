package health

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// FencedMarker is the file in PGDATA that marks the node as fenced: its
// agent stopped PostgreSQL because it could not hold the primary lease
// (or was told to). While it exists the agent never starts the server
// writable by itself, refuses to promote it, and reports the node fenced.
// Only a rejoin (or an operator) removes it.
const FencedMarker = "pgdr.fenced"

// FenceInfo is the content of the marker.
type FenceInfo struct {
	Node   string    `json:"node"`
	Reason string    `json:"reason"`
	Epoch  uint64    `json:"epoch"`
	Time   time.Time `json:"time"`
}

// FencedPath is the marker's path in pgdata.
func FencedPath(pgdata string) string { return filepath.Join(pgdata, FencedMarker) }

// ReadFenced returns the marker's content, or nil when the node is not
// fenced. A marker that exists but does not parse still fences the node.
func ReadFenced(pgdata string) (*FenceInfo, error) {
	b, err := os.ReadFile(FencedPath(pgdata))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return &FenceInfo{Reason: "unreadable marker"}, err
	}
	var fi FenceInfo
	if err := json.Unmarshal(b, &fi); err != nil {
		return &FenceInfo{Reason: "unparsable marker"}, fmt.Errorf("%s: %w", FencedPath(pgdata), err)
	}
	return &fi, nil
}

// WriteFenced writes the marker (mode 0600, fsynced, owned like pgdata
// when written by root).
func WriteFenced(pgdata string, fi FenceInfo) error {
	b, err := json.MarshalIndent(fi, "", "  ")
	if err != nil {
		return err
	}
	p := FencedPath(pgdata)
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if os.Geteuid() == 0 {
		if st, err := os.Stat(pgdata); err == nil {
			if s, ok := st.Sys().(*syscall.Stat_t); ok {
				os.Chown(tmp, int(s.Uid), int(s.Gid))
			}
		}
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	if d, err := os.Open(pgdata); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// RemoveFenced removes the marker (no error when there is none).
func RemoveFenced(pgdata string) error {
	if err := os.Remove(FencedPath(pgdata)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
