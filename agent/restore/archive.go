package restore

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/pgdr/pgdr/pkg/config"
)

// archiveSettings checks the archiving options and returns the settings
// that make the restored cluster archive as asked (issue 11, item 9): a
// restored copy keeps the source's archive_command in its configuration
// files, and archiving with it would put the copy's new timeline into the
// source's archive, where a later restore of the source may follow it. So
// archiving is off unless asked for, and never into the source's own
// repositories unless the copy replaces the source.
func archiveSettings(d Deps, o Options) ([]string, error) {
	switch {
	case o.NoArchive && (o.ArchiveConfig != "" || o.ReplacesSource):
		return nil, errors.New("--no-archive contradicts --archive-config and --replaces-source")
	case o.Rejoin:
		return nil, nil
	case o.ArchiveConfig != "":
		path, err := filepath.Abs(o.ArchiveConfig)
		if err != nil {
			return nil, fmt.Errorf("--archive-config %s: %w", o.ArchiveConfig, err)
		}
		cfg, err := config.Load(path)
		if err != nil {
			return nil, fmt.Errorf("--archive-config %s: %w", path, err)
		}
		if shared := sharedArchives(d.Cfg, cfg); len(shared) > 0 && !o.ReplacesSource {
			return nil, fmt.Errorf("--archive-config %s archives cluster %s into %s, the source's own archive: the restored copy's "+
				"new timeline would join the source's history there, and a later restore of the source could follow it. "+
				"Give the copy repositories (or a cluster name) of its own, or pass --replaces-source if this copy replaces the source cluster",
				path, cfg.Cluster, strings.Join(shared, ", "))
		}
		return []string{
			"archive_mode = 'on'",
			"archive_command = " + quoteConf(fmt.Sprintf("%s wal-push --config %s %%p", o.AgentPath, path)),
		}, nil
	case o.ReplacesSource:
		// The archive settings restored with the files stay: the copy
		// archives where the source did.
		return nil, nil
	}
	return []string{"archive_mode = 'off'"}, nil
}

// sharedArchives names the repositories of dst that hold src's archive:
// the same cluster name in the same repository.
func sharedArchives(src, dst *config.Config) []string {
	if src.Cluster != dst.Cluster {
		return nil
	}
	var out []string
	for _, a := range dst.Repos {
		for _, b := range src.Repos {
			if sameRepo(a, b) {
				out = append(out, fmt.Sprintf("repository %s (%s)", a.Name, a.URL))
				break
			}
		}
	}
	return out
}

// sameRepo reports whether two repository settings name the same storage.
func sameRepo(a, b config.Repo) bool {
	ua, err1 := url.Parse(a.URL)
	ub, err2 := url.Parse(b.URL)
	if err1 != nil || err2 != nil {
		return a.URL == b.URL
	}
	if ua.Scheme != ub.Scheme || ua.Host != ub.Host || cleanPath(ua.Path) != cleanPath(ub.Path) {
		return false
	}
	if ua.Scheme == "s3" {
		ea, eb := "", ""
		if a.S3 != nil {
			ea = strings.TrimRight(a.S3.Endpoint, "/")
		}
		if b.S3 != nil {
			eb = strings.TrimRight(b.S3.Endpoint, "/")
		}
		return ea == eb
	}
	return true
}

func cleanPath(p string) string {
	if p == "" {
		return ""
	}
	p = filepath.Clean(p)
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}

// quoteConf quotes a string for postgresql.conf.
func quoteConf(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
