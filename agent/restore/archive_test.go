package restore

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/config"
)

// writeArchiveConfig writes an agent configuration for cluster with the
// repositories given as name=url.
func writeArchiveConfig(t *testing.T, dir, file, cluster string, repos ...string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "cluster: %s\nnode: {name: copy, region: r}\npostgres:\n  pgdata: /srv/copy\n  dsn: \"host=127.0.0.1\"\nrepos:\n", cluster)
	for _, r := range repos {
		name, url, _ := strings.Cut(r, "=")
		fmt.Fprintf(&b, "  - name: %s\n    url: %s\n", name, url)
		if strings.HasPrefix(url, "s3:") {
			b.WriteString("    s3: {endpoint: \"http://127.0.0.1:7070\", region: us-east-1, path_style: true}\n")
		}
	}
	b.WriteString("encryption: {disabled: true}\n")
	p := filepath.Join(dir, file)
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestArchiveSettings: a restored cluster does not archive unless told;
// --archive-config archives elsewhere and refuses the source's own archive
// (same cluster in the same repository) unless --replaces-source.
func TestArchiveSettings(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	src := &config.Config{Cluster: "main", Repos: []config.Repo{
		{Name: "local", URL: "file://" + repoDir},
		{Name: "dr", URL: "s3://bucket/main", S3: &config.S3{Endpoint: "http://127.0.0.1:7070"}},
	}}
	d := Deps{Cfg: src}
	own := writeArchiveConfig(t, dir, "own.yaml", "main", "copy=file://"+filepath.Join(dir, "copyrepo"))
	sameFile := writeArchiveConfig(t, dir, "same.yaml", "main", "copy=file://"+filepath.Join(dir, "copyrepo"), "prod=file://"+repoDir+"/")
	sameS3 := writeArchiveConfig(t, dir, "sames3.yaml", "main", "prod=s3://bucket/main")
	otherCluster := writeArchiveConfig(t, dir, "other.yaml", "drill", "prod=file://"+repoDir)
	cmd := func(cfg string) []string {
		return []string{"archive_mode = 'on'", "archive_command = '/bin/pgdr-agent wal-push --config " + cfg + " %p'"}
	}
	for _, tc := range []struct {
		name string
		o    Options
		want []string
		err  string
	}{
		{"default", Options{}, []string{"archive_mode = 'off'"}, ""},
		{"--no-archive", Options{NoArchive: true}, []string{"archive_mode = 'off'"}, ""},
		{"re-clone of a member", Options{Rejoin: true}, nil, ""},
		{"--replaces-source", Options{ReplacesSource: true}, nil, ""},
		{"own repository", Options{ArchiveConfig: own}, cmd(own), ""},
		{"another cluster name in the source's repository", Options{ArchiveConfig: otherCluster}, cmd(otherCluster), ""},
		{"the source's file repository", Options{ArchiveConfig: sameFile}, nil, "repository prod (file://" + repoDir + "/)"},
		{"the source's S3 repository", Options{ArchiveConfig: sameS3}, nil, "--replaces-source"},
		{"the source's repository, replacing it", Options{ArchiveConfig: sameFile, ReplacesSource: true}, cmd(sameFile), ""},
		{"--no-archive with --archive-config", Options{NoArchive: true, ArchiveConfig: own}, nil, "contradicts"},
		{"--no-archive with --replaces-source", Options{NoArchive: true, ReplacesSource: true}, nil, "contradicts"},
		{"missing configuration", Options{ArchiveConfig: filepath.Join(dir, "none.yaml")}, nil, "none.yaml"},
	} {
		tc.o.AgentPath = "/bin/pgdr-agent"
		got, err := archiveSettings(d, tc.o)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v, %v; want an error saying %q", tc.name, got, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}
