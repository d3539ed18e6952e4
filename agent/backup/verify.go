package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"

	"filippo.io/age"

	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/pgcontrol"
	"github.com/pgdr/pgdr/pkg/progress"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/wal"
)

// VerifyReport is the outcome of re-reading a backup and its chain.
type VerifyReport struct {
	Repo     string   `json:"repo"`
	Backup   string   `json:"backup"`
	Chain    []string `json:"chain"`
	Objects  int      `json:"objects"`
	Verified int      `json:"verified"`
	// Bytes is the data verified after decryption and decompression;
	// StoredBytes what was read from the repository for it.
	Bytes       int64          `json:"bytes"`
	StoredBytes int64          `json:"stored_bytes"`
	Failed      []FailedObject `json:"failed"`
	WALNeeded   []string       `json:"wal_needed"`
	MissingWAL  []string       `json:"missing_wal"`
	// Absent: the repository does not hold the backup (or a backup of
	// its chain) at all; nothing else was checked there.
	Absent string `json:"absent,omitempty"`
}

// FailedObject names an object that did not read back and verify.
type FailedObject struct {
	Key   string `json:"key"`
	Error string `json:"error"`
}

// OK reports whether everything verified and the WAL is present.
func (v *VerifyReport) OK() bool {
	return len(v.Failed) == 0 && len(v.MissingWAL) == 0 && v.Absent == ""
}

// Verify re-reads, decrypts and checks every object of backup id and its
// chain (against the object's own checksums and the manifest's), and
// checks that the WAL backup id needs to reach consistency (from its start
// to its stop LSN) is archived. A backup or chain the repository does not
// hold is an error wrapping ErrNoBackup.
//
// progress, when not nil, receives a progress line every few seconds (the
// stored bytes read against the chain's total) and a final one.
func Verify(ctx context.Context, r repo.Repo, cluster, id string, ids []age.Identity, parallel int, progressTo io.Writer) (*VerifyReport, error) {
	id, err := Resolve(ctx, r, cluster, id)
	if err != nil {
		return nil, err
	}
	chain, err := Chain(ctx, r, cluster, id)
	if err != nil {
		return nil, err
	}
	rep := &VerifyReport{Repo: r.Name, Backup: id, Failed: []FailedObject{}, MissingWAL: []string{}}
	type job struct {
		key   string
		part  Part
		check func([]byte) error // of the plaintext, when not nil
	}
	var jobs []job
	for _, m := range chain {
		rep.Chain = append(rep.Chain, m.ID)
		for _, f := range m.Files {
			objs := f.Objects()
			for _, o := range objs {
				j := job{key: cluster + "/" + o.Object, part: o}
				if f.Path == controlFile && len(objs) == 1 {
					j.check = checkStoredControl
				}
				jobs = append(jobs, j)
			}
		}
	}
	m := chain[len(chain)-1]
	rep.WALNeeded = wal.SegmentsBetween(m.Timeline, m.StartLSN, m.StopLSN, m.SegmentSize)
	for _, s := range rep.WALNeeded {
		if _, err := r.Store.Stat(ctx, repo.WALKey(cluster, s)); err != nil {
			if !errors.Is(err, storage.ErrNotFound) {
				return nil, err
			}
			rep.MissingWAL = append(rep.MissingWAL, s)
		}
	}
	rep.Objects = len(jobs)
	var total int64
	for _, j := range jobs {
		total += j.part.Stored
	}
	var read atomic.Int64
	stopProgress := progress.Start(progressTo, "verify "+id+" in "+r.Name, func() int64 { return total }, read.Load, 0)
	defer stopProgress()
	if parallel < 1 {
		parallel = 1
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	var pool objstream.Pool
	for _, j := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			n, err := verifyObject(ctx, r, &pool, j.key, j.part, ids, &read, j.check)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				rep.Failed = append(rep.Failed, FailedObject{Key: j.key, Error: err.Error()})
				return
			}
			rep.Verified++
			rep.Bytes += n
		}()
	}
	wg.Wait()
	rep.StoredBytes = read.Load()
	sort.Slice(rep.Failed, func(i, j int) bool { return rep.Failed[i].Key < rep.Failed[j].Key })
	return rep, nil
}

// verifyObject reads one object back and checks it; check, when not nil,
// is also given its plaintext (a small object: global/pg_control).
func verifyObject(ctx context.Context, r repo.Repo, pool *objstream.Pool, key string, part Part, ids []age.Identity, read *atomic.Int64,
	check func([]byte) error) (int64, error) {
	rc, err := r.Store.Get(ctx, key)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	or, err := pool.NewReaderOpts(&progress.Reader{R: rc, N: read}, r.DataReadOptions(key, ids))
	if err != nil {
		return 0, err
	}
	defer or.Close()
	// The reader hashes the plaintext and checks it against the
	// object's trailer; the manifest's checksum is compared with that.
	var plain bytes.Buffer
	var dst io.Writer = io.Discard
	if check != nil {
		dst = &plain
	}
	n, err := io.Copy(dst, or)
	if err != nil {
		return n, err
	}
	if err := part.CheckSum(or.Sum()); err != nil {
		return n, err
	}
	if check != nil {
		return n, check(plain.Bytes())
	}
	return n, nil
}

// checkStoredControl checks the CRC of a stored global/pg_control: an
// intact object may still hold a copy torn by a concurrent rewrite
// (backups taken before pgdr checked it), with which the restored cluster
// does not start.
func checkStoredControl(b []byte) error {
	if err := pgcontrol.Check(b); err != nil {
		return fmt.Errorf("%s: %w: a cluster restored from this backup would not start", controlFile, err)
	}
	return nil
}
