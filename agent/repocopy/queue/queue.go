package queue

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/fsutil"
)

// Entry kinds.
const (
	// KindObject copies one object (a WAL file, a cluster record, ...).
	KindObject = "object"
	// KindBackup copies one backup: its data objects first, its manifest
	// last.
	KindBackup = "backup"
)

// ErrCorrupt means a queue file cannot be read as an entry.
var ErrCorrupt = errors.New("corrupt copy queue file")

// Entry is one unit of work.
type Entry struct {
	Kind string `json:"kind"`
	// Key is the object's key (KindObject) or the backup's ID (KindBackup).
	Key string `json:"key"`
	// Size is the bytes to copy (for the lag), Objects the objects (1 for
	// KindObject).
	Size    int64     `json:"size"`
	Objects int       `json:"objects"`
	Time    time.Time `json:"time"`

	name string // the file's name once added or listed
}

// Name is the entry's file name in its queue ("" before Add).
func (e Entry) Name() string { return e.name }

// Queue is one repository's queue directory.
type Queue struct {
	dir string
}

// Open returns the queue kept in dir. The directory is made (mode 0700)
// by the first Add; run as root, it goes to the owner of its nearest
// existing parent, so that wal-push run by PostgreSQL's user can add to it.
func Open(dir string) (*Queue, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("copy queue %q: not an absolute path (agent.state_dir)", dir)
	}
	return &Queue{dir: dir}, nil
}

func (q *Queue) makeDir() error {
	if _, err := os.Stat(q.dir); !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	own, chown := fsutil.InheritOwner(filepath.Dir(q.dir))
	if err := os.MkdirAll(q.dir, 0o700); err != nil {
		return fmt.Errorf("copy queue %s: %w", q.dir, err)
	}
	if chown {
		for p := q.dir; p != filepath.Dir(p); p = filepath.Dir(p) {
			if o, err := fsutil.OwnerOf(p); err == nil && o == own {
				break
			}
			if err := own.Chown(p); err != nil {
				return fmt.Errorf("copy queue %s: %w", q.dir, err)
			}
		}
	}
	return nil
}

// Dir is the queue's directory.
func (q *Queue) Dir() string { return q.dir }

// Hash names key (with its kind) in file names.
func Hash(kind, key string) string {
	h := sha256.Sum256([]byte(kind + "\x00" + key))
	return hex.EncodeToString(h[:8])
}

func fileName(e Entry) string {
	return fmt.Sprintf("%020d-%s-%d-%d.q", e.Time.UnixNano(), Hash(e.Kind, e.Key), e.Size, e.Objects)
}

// Add stores e durably. A zero Time is now; Objects 0 is 1.
func (q *Queue) Add(e Entry) error {
	if e.Kind != KindObject && e.Kind != KindBackup {
		return fmt.Errorf("copy queue %s: entry of unknown kind %q", q.dir, e.Kind)
	}
	if e.Key == "" {
		return fmt.Errorf("copy queue %s: entry without a key", q.dir)
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Time = e.Time.UTC()
	if e.Objects <= 0 {
		e.Objects = 1
	}
	body, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := q.makeDir(); err != nil {
		return err
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(q.dir, ".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("copy queue %s: %w", q.dir, err)
	}
	_, err = f.Write(append(body, '\n'))
	// Run as root, the entry goes to the queue directory's owner (the
	// daemon's user, PostgreSQL's), who must read and remove it.
	if own, chown := fsutil.InheritOwner(q.dir); err == nil && chown {
		err = own.Chown(tmp)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(q.dir, fileName(e)))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("copy queue %s: adding %s: %w", q.dir, e.Key, err)
	}
	return syncDir(q.dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("copy queue %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("copy queue %s: fsync: %w", dir, err)
	}
	return nil
}

// Pending is an entry as its file name describes it (List reads no file).
type Pending struct {
	Name    string
	Time    time.Time
	Hash    string
	Size    int64
	Objects int
}

// staleTemp is the age past which List removes an Add's temporary file.
const staleTemp = time.Hour

// Bad is a file in a queue directory that is not an entry.
type Bad struct {
	Name string
	Err  error // wraps ErrCorrupt and names the file
}

// List returns the queue's entries, oldest first, from the file names
// alone. A file whose name is not an entry's is left alone and reported in
// bad; temporary files of an Add in progress and quarantined files are
// skipped.
func (q *Queue) List() (entries []Pending, bad []Bad, err error) {
	des, err := os.ReadDir(q.dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("copy queue %s: %w", q.dir, err)
	}
	for _, de := range des {
		n := de.Name()
		if strings.HasPrefix(n, ".tmp-") {
			// An Add that died before its rename: the entry was never
			// added (its writer did not report success), so the file
			// goes once no Add can still be writing it.
			if fi, err := de.Info(); err == nil && time.Since(fi.ModTime()) > staleTemp {
				os.Remove(filepath.Join(q.dir, n))
			}
			continue
		}
		if strings.HasSuffix(n, ".corrupt") {
			continue
		}
		p, err := parseName(n)
		if err != nil {
			bad = append(bad, Bad{Name: n, Err: fmt.Errorf("%w %s: %v", ErrCorrupt, filepath.Join(q.dir, n), err)})
			continue
		}
		entries = append(entries, p)
	}
	return entries, bad, nil // ReadDir sorts by name: oldest first
}

func parseName(n string) (Pending, error) {
	base, ok := strings.CutSuffix(n, ".q")
	parts := strings.Split(base, "-")
	if !ok || len(parts) != 4 || len(parts[0]) != 20 || len(parts[1]) != 16 {
		return Pending{}, errors.New("not a queue entry's name (<time>-<hash>-<bytes>-<objects>.q)")
	}
	ns, err1 := strconv.ParseInt(parts[0], 10, 64)
	_, err2 := hex.DecodeString(parts[1])
	size, err3 := strconv.ParseInt(parts[2], 10, 64)
	objs, err4 := strconv.Atoi(parts[3])
	if err := errors.Join(err1, err2, err3, err4); err != nil || size < 0 || objs < 0 {
		return Pending{}, fmt.Errorf("not a queue entry's name: %v", err)
	}
	return Pending{Name: n, Time: time.Unix(0, ns).UTC(), Hash: parts[1], Size: size, Objects: objs}, nil
}

// Load reads the entry p names; a file that does not hold the entry its
// name describes gives an error wrapping ErrCorrupt that names the file.
func (q *Queue) Load(p Pending) (Entry, error) {
	path := filepath.Join(q.dir, p.Name)
	b, err := os.ReadFile(path)
	if err != nil {
		return Entry{}, fmt.Errorf("copy queue: %w", err)
	}
	var e Entry
	if err := json.Unmarshal(b, &e); err != nil {
		return Entry{}, fmt.Errorf("%w %s: %v", ErrCorrupt, path, err)
	}
	if (e.Kind != KindObject && e.Kind != KindBackup) || e.Key == "" || Hash(e.Kind, e.Key) != p.Hash {
		return Entry{}, fmt.Errorf("%w %s: the entry (kind %q, key %q) does not match its file name", ErrCorrupt, path, e.Kind, e.Key)
	}
	e.name = p.Name
	return e, nil
}

// Done removes the entry once its copy is verified; an entry already gone
// is not an error.
func (q *Queue) Done(e Entry) error {
	if e.name == "" {
		return fmt.Errorf("copy queue %s: Done of an entry not from this queue (%s)", q.dir, e.Key)
	}
	if err := os.Remove(filepath.Join(q.dir, e.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("copy queue: %w", err)
	}
	return nil
}

// Quarantine renames the unreadable queue file name to name.corrupt: it
// stays on disk for inspection and no longer blocks the queue.
func (q *Queue) Quarantine(name string) error {
	p := filepath.Join(q.dir, filepath.Base(name))
	if err := os.Rename(p, p+".corrupt"); err != nil {
		return fmt.Errorf("copy queue: quarantining %s: %w", p, err)
	}
	return nil
}

// Lag is what a queue still holds.
type Lag struct {
	Objects int64
	Bytes   int64
	Oldest  time.Time // zero when empty
}

// LagOf sums entries.
func LagOf(entries []Pending) Lag {
	var l Lag
	for i, p := range entries {
		l.Objects += int64(p.Objects)
		l.Bytes += p.Size
		if i == 0 || p.Time.Before(l.Oldest) {
			l.Oldest = p.Time
		}
	}
	return l
}

// DirOf is where the queue of the repository named repoName lives.
func DirOf(stateDir, repoName string) string {
	return filepath.Join(stateDir, "repocopy", repoName)
}

// Enqueue adds e to the queue of every async repository of cfg; with none
// it does nothing. The errors of every queue are joined.
func Enqueue(cfg *config.Config, e Entry) error {
	var errs []error
	for _, r := range cfg.Repos {
		if !r.Async() {
			continue
		}
		q, err := Open(DirOf(cfg.Agent.StateDir, r.Name))
		if err == nil {
			err = q.Add(e)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("repository %s: %w", r.Name, err))
		}
	}
	return errors.Join(errs...)
}
