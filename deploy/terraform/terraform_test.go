package terraform

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"

	"github.com/pgdr/pgdr/pkg/config"
)

const moduleDir = "aws"

// module is the parsed .tf files of one directory.
type module struct {
	files map[string][]byte
	body  []*hclsyntax.Body
}

func load(t *testing.T, dir string) *module {
	t.Helper()
	m := &module{files: map[string][]byte{}}
	p := hclparse.NewParser()
	paths, err := filepath.Glob(filepath.Join(dir, "*.tf"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no .tf files in %s (%v)", dir, err)
	}
	for _, path := range paths {
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		f, diags := p.ParseHCL(src, path)
		if diags.HasErrors() {
			t.Fatalf("%s: %s", path, diags.Error())
		}
		m.files[path] = src
		m.body = append(m.body, f.Body.(*hclsyntax.Body))
	}
	return m
}

// blocks returns the top-level blocks of a type whose labels start with
// labels.
func (m *module) blocks(typ string, labels ...string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, b := range m.body {
		for _, blk := range b.Blocks {
			if blk.Type == typ && len(blk.Labels) >= len(labels) && slices.Equal(blk.Labels[:len(labels)], labels) {
				out = append(out, blk)
			}
		}
	}
	return out
}

func (m *module) one(t *testing.T, typ string, labels ...string) *hclsyntax.Block {
	t.Helper()
	bs := m.blocks(typ, labels...)
	if len(bs) != 1 {
		t.Fatalf("%s %q: %d blocks, want 1", typ, labels, len(bs))
	}
	return bs[0]
}

// src is the source text of a node.
func (m *module) src(r hcl.Range) string {
	return string(r.SliceBytes(m.files[r.Filename]))
}

// attr is the source text of an attribute ("" when absent).
func (m *module) attr(b *hclsyntax.Body, name string) string {
	a, ok := b.Attributes[name]
	if !ok {
		return ""
	}
	return m.src(a.Expr.Range())
}

// literalStrings evaluates an attribute holding literal strings (a list or one).
func literalStrings(t *testing.T, b *hclsyntax.Body, name string) []string {
	t.Helper()
	a, ok := b.Attributes[name]
	if !ok {
		return nil
	}
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		t.Fatalf("%s: not a literal: %s", name, diags.Error())
	}
	if v.Type().IsPrimitiveType() {
		return []string{v.AsString()}
	}
	var out []string
	for it := v.ElementIterator(); it.Next(); {
		_, e := it.Element()
		out = append(out, e.AsString())
	}
	return out
}

func nested(b *hclsyntax.Body, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, blk := range b.Blocks {
		if blk.Type == typ {
			out = append(out, blk)
		}
	}
	return out
}

func dirs(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(moduleDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			if m, _ := filepath.Glob(filepath.Join(p, "*.tf")); len(m) > 0 {
				out = append(out, p)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestParseAndFormat: every .tf file parses and is formatted as
// hclwrite.Format (terraform fmt's formatter) leaves it.
func TestParseAndFormat(t *testing.T) {
	for _, dir := range dirs(t) {
		m := load(t, dir)
		for path, src := range m.files {
			if got := hclwrite.Format(src); !bytes.Equal(got, src) {
				t.Errorf("%s is not formatted (terraform fmt); formatted:\n%s", path, got)
			}
		}
	}
	tf, err := exec.LookPath("terraform")
	if err != nil {
		t.Log("terraform is not installed: terraform fmt -check not run (the hclwrite check above stands in for it)")
		return
	}
	// fmt needs no provider and no network (never init here).
	cmd := exec.Command(tf, "fmt", "-check", "-recursive", "-no-color", moduleDir)
	cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE=/dev/null", "CHECKPOINT_DISABLE=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("terraform fmt -check: %v\n%s", err, out)
	}
}

func TestRegionsAndBuckets(t *testing.T) {
	m := load(t, moduleDir)
	aliases := map[string]string{}
	for _, p := range m.blocks("provider", "aws") {
		if a := m.attr(p.Body, "alias"); a != "" {
			aliases[strings.Trim(a, `"`)] = m.attr(p.Body, "region")
		}
	}
	for i, alias := range []string{"r1", "r2", "r3"} {
		if want := "var.regions[" + string(rune('0'+i)) + "]"; aliases[alias] != want {
			t.Errorf("provider aws.%s: region %q, want %s", alias, aliases[alias], want)
		}
		mod := m.one(t, "module", "bucket_"+alias)
		if src := m.attr(mod.Body, "source"); src != `"./modules/bucket"` {
			t.Errorf("module bucket_%s: source %s", alias, src)
		}
		if p := m.attr(mod.Body, "providers"); !regexp.MustCompile(`aws\s*=\s*aws\.` + alias + `\b`).MatchString(p) {
			t.Errorf("module bucket_%s: providers %s, want aws = aws.%s", alias, p, alias)
		}
	}
	if v := m.one(t, "variable", "regions"); !strings.Contains(m.src(v.Range()), "length(var.regions) == 3") {
		t.Errorf("variable regions does not require three regions")
	}

	b := load(t, filepath.Join(moduleDir, "modules", "bucket"))
	b.one(t, "resource", "aws_s3_bucket", "this")
	ver := b.one(t, "resource", "aws_s3_bucket_versioning", "this")
	if vc := nested(ver.Body, "versioning_configuration"); len(vc) != 1 || b.attr(vc[0].Body, "status") != `"Enabled"` {
		t.Errorf("versioning is not Enabled")
	}
	enc := b.one(t, "resource", "aws_s3_bucket_server_side_encryption_configuration", "this")
	if !strings.Contains(b.src(enc.Range()), "apply_server_side_encryption_by_default") || !strings.Contains(b.src(enc.Range()), `"AES256"`) {
		t.Errorf("no default encryption")
	}
	pab := b.one(t, "resource", "aws_s3_bucket_public_access_block", "this")
	for _, a := range []string{"block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"} {
		if b.attr(pab.Body, a) != "true" {
			t.Errorf("public access block: %s is not true", a)
		}
	}
	lc := b.one(t, "resource", "aws_s3_bucket_lifecycle_configuration", "this")
	var transitions, noncurrent bool
	for _, r := range nested(lc.Body, "rule") {
		s := b.src(r.Range())
		transitions = transitions || strings.Contains(s, `dynamic "transition"`) && strings.Contains(s, "each.value.cold_prefix")
		noncurrent = noncurrent || strings.Contains(s, "noncurrent_version_expiration")
	}
	if !transitions || !noncurrent {
		t.Errorf("lifecycle: cold transitions of the long-retention prefix %v, noncurrent version expiry %v", transitions, noncurrent)
	}
	lock := b.one(t, "resource", "aws_s3_bucket_object_lock_configuration", "monthly")
	if !strings.Contains(b.src(lock.Range()), "var.monthly_object_lock.mode") {
		t.Errorf("object lock does not take monthly_object_lock's mode")
	}
	if !strings.Contains(b.src(b.one(t, "resource", "aws_s3_bucket", "this").Range()), "object_lock_enabled = each.value.lock") {
		t.Errorf("the monthly bucket is not created with object lock enabled")
	}
}

// yamlKeys is every yaml key of a struct type, recursively.
func yamlKeys(t reflect.Type, into map[string]bool) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name != "" && name != "-" {
			into[name] = true
		}
		yamlKeys(f.Type, into)
	}
}

// TestReposOutput: repos_yaml's objects use only fields of the agent
// configuration's repos[] (pkg/config.Repo), with sync and async modes.
func TestReposOutput(t *testing.T) {
	m := load(t, moduleDir)
	out := m.one(t, "output", "repos_yaml")
	value := m.attr(out.Body, "value")
	allowed := map[string]bool{"repos": true}
	yamlKeys(reflect.TypeFor[config.Repo](), allowed)
	for _, key := range regexp.MustCompile(`[{,]\s*(\w+)\s*=`).FindAllStringSubmatch(value, -1) {
		if !allowed[key[1]] {
			t.Errorf("repos_yaml uses %q, not a field of the agent's repos[] (%v)", key[1], allowed)
		}
	}
	for _, s := range []string{"yamlencode(", `mode = "sync"`, `mode = "async"`, `url = "s3://${b.bucket}/${var.prefix}"`, "archive-${region}", "monthly-${region}"} {
		if !strings.Contains(value, s) {
			t.Errorf("repos_yaml lacks %s", s)
		}
	}
}

// TestIAM: the agent's policy deletes only pgdr's own markers, the expiry
// role may delete under its cluster's prefixes, nobody deletes versions or
// bypasses Object Lock, and coordinators get no role.
func TestIAM(t *testing.T) {
	m := load(t, moduleDir)
	statements := func(name string) []*hclsyntax.Block {
		return nested(m.one(t, "data", "aws_iam_policy_document", name).Body, "statement")
	}
	for _, st := range statements("agent") {
		actions := literalStrings(t, st.Body, "actions")
		for _, a := range actions {
			if a == "s3:*" || a == "*" || strings.HasSuffix(a, "*") {
				t.Errorf("agent policy: wildcard action %q", a)
			}
			if !strings.Contains(a, "Delete") {
				continue
			}
			res := m.attr(st.Body, "resources")
			if !strings.Contains(res, ".pgdr-probe-*") && !strings.Contains(res, "/backup/*.reserved/*") {
				t.Errorf("agent policy: %s on %s: the writer role may delete only the probe and reservation markers", a, res)
			}
		}
	}
	// Listing is limited to the cluster's prefixes, each ending in "/": a
	// prefix without it ("pgdr/main") would list pgdr/main2/ as well.
	list := nested(m.one(t, "data", "aws_iam_policy_document", "agent").Body, "statement")[0]
	if cond := nested(list.Body, "condition"); len(cond) != 1 || m.attr(cond[0].Body, "variable") != `"s3:prefix"` ||
		!strings.HasSuffix(strings.TrimSpace(m.attr(cond[0].Body, "values")), `"${p}/${each.key}/*"]`) {
		t.Errorf("agent policy: ListBucket is not limited to the cluster's prefixes with a trailing slash: %s", m.src(list.Range()))
	}
	var expiryDeletes bool
	for _, st := range statements("expiry") {
		if slices.Contains(literalStrings(t, st.Body, "actions"), "s3:DeleteObject") && strings.Contains(m.attr(st.Body, "resources"), "/${each.key}/*") {
			expiryDeletes = true
		}
	}
	if !expiryDeletes {
		t.Errorf("the expiry role cannot delete under its cluster's prefix")
	}
	for path, src := range m.files {
		for _, bad := range []string{"s3:DeleteObjectVersion", "s3:BypassGovernanceRetention", "s3:PutBucketPolicy", "s3:PutObjectRetention"} {
			if bytes.Contains(src, []byte(`"`+bad+`"`)) {
				t.Errorf("%s grants %s", path, bad)
			}
		}
	}
	for _, r := range append(m.blocks("resource", "aws_iam_role"), m.blocks("resource", "aws_iam_role_policy")...) {
		if strings.Contains(m.src(r.Range()), "coordinator") {
			t.Errorf("%s %v: coordinators need no AWS role", r.Type, r.Labels)
		}
	}
	if n := len(m.blocks("resource", "aws_iam_role")); n != 2 {
		t.Errorf("%d IAM roles, want the agent's and the expiry's", n)
	}
}
