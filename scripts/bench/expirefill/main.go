// Command expirefill fills a repository for scripts/bench/expire.sh (make
// bench-expire): --wal archived WAL objects on timeline 1 and --backups
// backups, one an hour up to now, each a full followed by --chain-1
// incrementals building on it (parent = the previous backup). A full
// backup has --full-files data objects, an incremental --incr-files; every
// manifest lists its files (so reading a manifest costs what a real one
// does) and is signed with the configuration's signing key. WAL positions
// are spread evenly: backup i starts in segment i*wal/backups.
//
// Objects are written through the repository's store (the same keys and
// bodies of a few bytes), --parallel at once. It prints one line of
// figures on stdout.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/keys"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/wal"
)

func main() {
	cfgPath := flag.String("config", "", "pgdr-agent configuration naming the repository")
	repoName := flag.String("repo", "", "repository to fill (default: the first)")
	nWAL := flag.Int("wal", 100000, "archived WAL objects")
	nBackups := flag.Int("backups", 200, "backups")
	chain := flag.Int("chain", 4, "backups per chain: a full and chain-1 incrementals")
	fullFiles := flag.Int("full-files", 1000, "data objects of a full backup")
	incrFiles := flag.Int("incr-files", 100, "data objects of an incremental backup")
	parallel := flag.Int("parallel", 32, "objects written at once")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *cfgPath, *repoName, *nWAL, *nBackups, *chain, *fullFiles, *incrFiles, *parallel); err != nil {
		fmt.Fprintln(os.Stderr, "expirefill:", err)
		os.Exit(1)
	}
}

const sysid = 7300000000000000042

func run(ctx context.Context, cfgPath, repoName string, nWAL, nBackups, chain, fullFiles, incrFiles, parallel int) error {
	if cfgPath == "" || nWAL < nBackups || nBackups < 1 || chain < 1 || parallel < 1 {
		return fmt.Errorf("need --config, --backups >= 1, --wal >= --backups, --chain >= 1, --parallel >= 1")
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	repos, err := repo.OpenAll(ctx, cfg)
	if err != nil {
		return err
	}
	r := repos[0]
	for _, x := range repos {
		if x.Name == repoName {
			r = x
		}
	}
	if repoName != "" && r.Name != repoName {
		return fmt.Errorf("no repository %q in %s", repoName, cfgPath)
	}
	signer, err := keys.Signer(cfg)
	if err != nil {
		return err
	}
	cluster := cfg.Cluster
	if err := repo.EnsureClusterInfo(ctx, r, cluster, sysid); err != nil {
		return err
	}
	t0 := time.Now()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan string, 4*parallel)
	var wg sync.WaitGroup
	var n atomic.Int64
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range work {
				if err := r.Store.Put(ctx, k, strings.NewReader(k), int64(len(k))); err != nil {
					cancel(fmt.Errorf("put %s: %w", k, err))
					continue
				}
				if v := n.Add(1); v%20000 == 0 {
					fmt.Fprintf(os.Stderr, "expirefill: %d objects in %s\n", v, time.Since(t0).Round(time.Second))
				}
			}
		}()
	}
	send := func(k string) bool {
		select {
		case work <- k:
			return true
		case <-ctx.Done():
			return false
		}
	}
	const seg = wal.DefaultSegmentSize
	per := uint64(nWAL / nBackups)
	now := time.Now().UTC().Truncate(time.Hour)
	var ms []*backup.Manifest
	parent := ""
	for i := range nBackups {
		start := now.Add(-time.Duration(nBackups-i) * time.Hour)
		typ, suffix, files := backup.TypeFull, "F", fullFiles
		if i%chain != 0 {
			typ, suffix, files = backup.TypeIncr, "I", incrFiles
		}
		id := start.Format("20060102T150405") + suffix
		if typ == backup.TypeFull {
			parent = ""
		}
		startLSN := wal.LSN(uint64(i)*per*seg + 40)
		m := &backup.Manifest{Format: backup.ManifestFormat, ID: id, Type: typ, Parent: parent, Label: "bench", Cluster: cluster, Node: "bench",
			SystemIdentifier: sysid, PGVersion: 150000, SegmentSize: seg, StartTime: start, StopTime: start.Add(time.Minute),
			StartLSN: startLSN, StopLSN: startLSN + 2*seg, Timeline: 1,
			WALStart: startLSN.Segment(1, seg), WALStop: (startLSN + 2*seg).Segment(1, seg)}
		for f := range files {
			p := fmt.Sprintf("base/5/%d", 16384+f)
			obj := "backup/" + id + "/pgdata/" + p
			m.Files = append(m.Files, backup.File{Path: p, Size: 8192, Mode: 0o600, MTime: start, Kind: "file", Object: obj,
				BLAKE3: strings.Repeat("ab", 32), Stored: 120, Refs: []string{id}})
		}
		ms = append(ms, m)
		parent = id
	}
	// Data objects and WAL, interleaved; manifests last (as a backup does).
	wi := 0
	for i, m := range ms {
		for _, f := range m.Files {
			if !send(cluster + "/" + f.Object) {
				break
			}
		}
		for ; wi < (i+1)*nWAL/nBackups; wi++ {
			if !send(repo.WALKey(cluster, wal.SegmentName(1, uint64(wi), seg))) {
				break
			}
		}
	}
	close(work)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	sem := make(chan struct{}, parallel)
	var merr atomic.Pointer[error]
	for _, m := range ms {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := backup.SaveManifest(ctx, r, m, signer); err != nil {
				merr.CompareAndSwap(nil, &err)
			}
		}()
	}
	wg.Wait()
	if p := merr.Load(); p != nil {
		return *p
	}
	fmt.Printf("filled %s: %d WAL objects, %d backups (%d data objects), %d manifests, in %s\n",
		r.Store, nWAL, nBackups, n.Load()-int64(nWAL), len(ms), time.Since(t0).Round(100*time.Millisecond))
	return nil
}
