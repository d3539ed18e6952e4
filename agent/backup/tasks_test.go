package backup

import (
	"io/fs"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/pgpage"
)

// sizeInfo is a fs.FileInfo with only a name and a size.
type sizeInfo struct {
	name string
	size int64
}

func (s sizeInfo) Name() string       { return s.name }
func (s sizeInfo) Size() int64        { return s.size }
func (s sizeInfo) Mode() fs.FileMode  { return 0o600 }
func (s sizeInfo) ModTime() time.Time { return time.Time{} }
func (s sizeInfo) IsDir() bool        { return false }
func (s sizeInfo) Sys() any           { return nil }

func walkFiles(sizes map[string]int64) []walkFile {
	var out []walkFile
	for name, size := range sizes {
		out = append(out, walkFile{rel: name, abs: "/nonexistent/" + name, info: sizeInfo{name, size}})
	}
	return out
}

// TestSplitTasks: a file larger than the part size becomes parts of equal
// size in whole pages, never larger than the part size, covering the file;
// all tasks come largest first.
func TestSplitTasks(t *testing.T) {
	const mib = 1 << 20
	sizes := map[string]int64{
		"base/5/16396":   1024 * mib,
		"base/5/16396.1": 269213696, // 256.7 MiB: three parts of 85.6 MiB
		"base/5/16404":   224641024, // 214.2 MiB: two of 107.1 MiB, not 128 + 86
		"base/5/1259":    8192 * 12,
		"PG_VERSION":     3,
		"base/5/2619":    128 * mib, // exactly one part
	}
	tasks := splitTasks(walkFiles(sizes), 128*mib)
	covered := map[string]int64{}
	parts := map[string]int{}
	for i, tk := range tasks {
		if i > 0 && tk.size() > tasks[i-1].size() {
			t.Fatalf("task %d (%s, %d bytes) is larger than the one before it (%d bytes)", i, tk.wf.rel, tk.size(), tasks[i-1].size())
		}
		if tk.nparts == 1 {
			covered[tk.wf.rel] += tk.size()
			continue
		}
		parts[tk.wf.rel]++
		if tk.partSize%pgpage.BlockSize != 0 || tk.partSize > 128*mib {
			t.Fatalf("%s: part size %d", tk.wf.rel, tk.partSize)
		}
		if tk.size() <= 0 || tk.size() > tk.partSize {
			t.Fatalf("%s part %d: %d bytes of a %d-byte part size", tk.wf.rel, tk.part, tk.size(), tk.partSize)
		}
		if int64(tk.part)*tk.partSize != covered[tk.wf.rel] {
			t.Fatalf("%s part %d starts at %d, want %d", tk.wf.rel, tk.part, int64(tk.part)*tk.partSize, covered[tk.wf.rel])
		}
		covered[tk.wf.rel] += tk.size()
	}
	for name, size := range sizes {
		if covered[name] != size {
			t.Errorf("%s: tasks cover %d of %d bytes", name, covered[name], size)
		}
	}
	for name, want := range map[string]int{"base/5/16396": 8, "base/5/16396.1": 3, "base/5/16404": 2, "base/5/2619": 0} {
		if parts[name] != want {
			t.Errorf("%s: %d parts, want %d", name, parts[name], want)
		}
	}
}

// TestInterleave: the small tasks are spread evenly after the large ones,
// each group keeping its order.
func TestInterleave(t *testing.T) {
	sizes := map[string]int64{}
	for i := range 4 {
		sizes[string(rune('A'+i))] = int64(10-i) << 20
	}
	for i := range 10 {
		sizes[string(rune('a'+i))] = int64(100 - i)
	}
	tasks := interleave(splitTasks(walkFiles(sizes), 128<<20))
	var got string
	for _, tk := range tasks {
		got += tk.wf.rel
	}
	if want := "AabBcdeCfgDhij"; got != want {
		t.Fatalf("order %s, want %s", got, want)
	}
	// Nothing to interleave: unchanged.
	only := splitTasks(walkFiles(map[string]int64{"x": 1, "y": 2}), 128<<20)
	if got := interleave(only); len(got) != 2 || got[0].wf.rel != "y" {
		t.Fatalf("small tasks alone: %v", got)
	}
}
