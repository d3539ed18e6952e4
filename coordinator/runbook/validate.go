package runbook

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pgdr/pgdr/pkg/duration"
	"github.com/pgdr/pgdr/pkg/tiername"
)

// Bounds keep a runbook stored in the replicated state small.
const (
	MaxDocument    = 64 << 10 // bytes of YAML Parse reads
	MaxSteps       = 50
	MaxParams      = 20
	MaxName        = 64   // runbook, step, parameter, node, region, tier names
	MaxText        = 1024 // description, message, parameter value
	MaxRun         = 4096 // a command line
	MaxCount       = 1000 // count of a condition
	MaxTimeout     = 24 * time.Hour
	maxBytesAmount = int64(1) << 50
)

var (
	idRE    = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	paramRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	refRE   = regexp.MustCompile(`\$\{([^}]*)\}`)
	// nameRE: node and region names, as fsm.ValidName accepts them (not
	// imported: the replicated state will hold runbooks).
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
)

// nameFields hold a node or region name.
var nameFields = []string{"to_node", "to_region", "away_from_region", "region", "outside_region", "node"}

// Validate checks a runbook as stored: names, bounds, each step's action
// and its fields, conditions, rollbacks, the after dependencies (a cycle
// is refused naming its steps) and every ${param} reference. Values that
// refer to a parameter are checked by Resolve once substituted. Every
// problem is reported, each naming its field path (steps[2].action).
func Validate(rb Runbook) error {
	var errs []error
	add := func(path, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, a...)))
	}
	checkID(add, "name", rb.Name)
	checkLen(add, "description", rb.Description, MaxText)
	declared := checkParams(add, rb.Params)
	switch {
	case len(rb.Steps) == 0:
		add("steps", "a runbook needs at least one step")
	case len(rb.Steps) > MaxSteps:
		add("steps", "%d steps, more than %d", len(rb.Steps), MaxSteps)
	}
	ids := map[string]int{}
	for i, s := range rb.Steps {
		p := fmt.Sprintf("steps[%d]", i)
		checkID(add, p+".id", s.ID)
		if j, dup := ids[s.ID]; dup && s.ID != "" {
			add(p+".id", "duplicate step id %q (also steps[%d])", s.ID, j)
		} else {
			ids[s.ID] = i
		}
		checkBody(add, p, &rb.Steps[i].Body, false)
		if s.Validate != nil {
			checkCheck(add, p+".validate", *s.Validate, validateConds, true)
		}
		if s.Rollback != nil {
			checkBody(add, p+".rollback", s.Rollback, true)
		}
	}
	checkAfter(add, rb.Steps, ids)
	checkRefs(add, rb, declared)
	if len(errs) > 0 {
		return fmt.Errorf("%w %q: %w", ErrInvalid, rb.Name, errors.Join(errs...))
	}
	return nil
}

type addFunc func(path, format string, a ...any)

func checkID(add addFunc, path, v string) {
	switch {
	case v == "":
		add(path, "required")
	case len(v) > MaxName:
		add(path, "longer than %d bytes", MaxName)
	case !idRE.MatchString(v):
		add(path, "%q: use lower-case letters, digits and '-'", v)
	}
}

func checkLen(add addFunc, path, v string, max int) {
	if len(v) > max {
		add(path, "longer than %d bytes", max)
	}
}

// checkParams checks the declarations and returns the declared names.
func checkParams(add addFunc, ps []Param) map[string]bool {
	declared := map[string]bool{}
	if len(ps) > MaxParams {
		add("params", "%d parameters, more than %d", len(ps), MaxParams)
	}
	for i, p := range ps {
		path := fmt.Sprintf("params[%d]", i)
		switch {
		case p.Name == "":
			add(path+".name", "required")
		case len(p.Name) > MaxName || !paramRE.MatchString(p.Name):
			add(path+".name", "%q: use a lower-case letter, then letters, digits and '_' (at most %d bytes)", clip(p.Name), MaxName)
		case declared[p.Name]:
			add(path+".name", "duplicate parameter %q", p.Name)
		}
		declared[p.Name] = true
		if p.Required && p.Default != "" {
			add(path+".default", "a required parameter has no default")
		}
		checkLen(add, path+".default", p.Default, MaxText)
		checkLen(add, path+".description", p.Description, MaxText)
		if strings.Contains(p.Default, "${") {
			add(path+".default", "a default cannot refer to a parameter")
		}
	}
	return declared
}

// field is one string field of a body, by its YAML name.
type field struct {
	name string
	p    *string
}

// fields lists a body's string fields (Action and Condition excluded:
// they never take a parameter).
func (b *Body) fields() []field {
	return []field{
		{"to_node", &b.ToNode}, {"to_region", &b.ToRegion}, {"away_from_region", &b.AwayFromRegion},
		{"bytes", &b.Bytes}, {"region", &b.Region}, {"outside_region", &b.OutsideRegion},
		{"count", &b.Count}, {"timeout", &b.Timeout},
		{"tier", &b.Tier}, {"node", &b.Node}, {"run", &b.Run}, {"message", &b.Message},
	}
}

func (c *Check) fields() []field {
	return []field{
		{"bytes", &c.Bytes}, {"region", &c.Region}, {"outside_region", &c.OutsideRegion},
		{"count", &c.Count}, {"timeout", &c.Timeout},
	}
}

// allowed: the fields each action may set (besides action and timeout).
var allowed = map[Action][]string{
	ActionPause:      {"message"},
	ActionResume:     nil,
	ActionSwitchover: {"to_node", "to_region", "away_from_region", "to_previous"},
	ActionWait:       {"condition", "bytes", "region", "outside_region", "count"},
	ActionBackup:     {"tier"},
	ActionDrill:      {"node"},
	ActionCommand:    {"node", "run"},
	ActionNotify:     {"message"},
}

// checkBody checks an action and its fields; path is the step's (or
// "steps[i].rollback").
func checkBody(add addFunc, path string, b *Body, rollback bool) {
	want, ok := allowed[b.Action]
	if !ok {
		if b.Action == "" {
			add(path+".action", "required (want %s)", actionList())
		} else {
			add(path+".action", "unknown action %q (want %s)", clip(string(b.Action)), actionList())
		}
		return
	}
	set := []string{}
	for _, f := range b.fields() {
		if *f.p != "" && f.name != "timeout" {
			set = append(set, f.name)
		}
	}
	if b.Condition != "" {
		set = append(set, "condition")
	}
	if b.ToPrevious {
		set = append(set, "to_previous")
	}
	for _, f := range set {
		if !slices.Contains(want, f) {
			add(path+"."+f, "not a field of action %s", b.Action)
		}
	}
	checkTexts(add, path, b.fields())
	if b.Timeout != "" && !hasRef(b.Timeout) {
		if _, err := parseTimeout(b.Timeout); err != nil {
			add(path+".timeout", "%v", err)
		}
	}
	switch b.Action {
	case ActionSwitchover:
		checkSwitchover(add, path, b, rollback)
	case ActionWait:
		checkCheck(add, path, b.Check, waitConds, false)
	case ActionBackup:
		if b.Tier == "" {
			add(path+".tier", "required: the policy tier to back up")
		}
	case ActionCommand:
		if b.Node == "" {
			add(path+".node", "required: the node whose agent runs the command")
		}
		if strings.TrimSpace(b.Run) == "" {
			add(path+".run", "required: the name of a command in the agent's commands: config")
		}
	case ActionNotify:
		if strings.TrimSpace(b.Message) == "" {
			add(path+".message", "required")
		}
	}
}

func checkSwitchover(add addFunc, path string, b *Body, rollback bool) {
	n := 0
	for _, v := range []string{b.ToNode, b.ToRegion, b.AwayFromRegion} {
		if v != "" {
			n++
		}
	}
	if b.ToPrevious {
		n++
		if !rollback {
			add(path+".to_previous", "only a rollback can switch back to the previous primary")
		}
	}
	switch {
	case n == 0 && rollback:
		add(path, "switchover needs to_node, to_region, away_from_region or to_previous")
	case n == 0:
		add(path, "switchover needs to_node, to_region or away_from_region")
	case n > 1:
		add(path, "switchover takes one of to_node, to_region, away_from_region, to_previous")
	}
}

// checkTexts bounds string fields and checks the names among them (a
// value naming a parameter is checked once substituted).
func checkTexts(add addFunc, path string, fs []field) {
	for _, f := range fs {
		v := *f.p
		switch {
		case v == "" || hasRef(v):
		case slices.Contains(nameFields, f.name) && !nameRE.MatchString(v):
			add(path+"."+f.name, "%q is not a valid name (letters, digits, '.', '_', '-'; at most 63)", clip(v))
			continue
		case f.name == "tier" && !tiername.Valid(v):
			add(path+".tier", "%q is not a tier name (%s)", clip(v), tiername.Rule)
			continue
		}
		max := MaxName
		switch f.name {
		case "message":
			max = MaxText
		case "run":
			max = MaxRun
		}
		checkLen(add, path+"."+f.name, *f.p, max)
	}
}

// checkCheck checks a condition: of a wait step (inline, path is the
// step's) or of a validation (path ends in .validate).
func checkCheck(add addFunc, path string, c Check, conds []Condition, validation bool) {
	if c.Condition == "" {
		add(path+".condition", "required (want %s)", condList(conds))
		return
	}
	if !slices.Contains(conds, c.Condition) {
		add(path+".condition", "unknown condition %q (want %s)", clip(string(c.Condition)), condList(conds))
		return
	}
	if validation {
		checkTexts(add, path, c.fields())
		if c.Timeout != "" && !hasRef(c.Timeout) {
			if _, err := parseTimeout(c.Timeout); err != nil {
				add(path+".timeout", "%v", err)
			}
		}
	}
	need := map[Condition][]string{
		CondLagUnder:           {"bytes", "region", "outside_region", "count"},
		CondHealthyReplicas:    {"region", "outside_region", "count"},
		CondReposCaughtUp:      nil,
		CondPrimaryInRegion:    {"region"},
		CondPrimaryNotInRegion: {"region"},
	}[c.Condition]
	for _, f := range c.fields() {
		if *f.p != "" && f.name != "timeout" && !slices.Contains(need, f.name) {
			add(path+"."+f.name, "not a field of condition %s", c.Condition)
		}
	}
	switch c.Condition {
	case CondLagUnder:
		if c.Bytes == "" {
			add(path+".bytes", "required: the largest replay lag accepted, in bytes (or kB, MB, GB)")
		} else if !hasRef(c.Bytes) {
			if _, err := parseBytes(c.Bytes); err != nil {
				add(path+".bytes", "%v", err)
			}
		}
	case CondPrimaryInRegion, CondPrimaryNotInRegion:
		if c.Region == "" {
			add(path+".region", "required")
		}
	}
	if c.Region != "" && c.OutsideRegion != "" {
		add(path, "region and outside_region exclude each other")
	}
	if c.Count != "" && !hasRef(c.Count) {
		if _, err := parseCount(c.Count); err != nil {
			add(path+".count", "%v", err)
		}
	}
}

// checkAfter checks the dependencies and refuses a cycle.
func checkAfter(add addFunc, steps []Step, ids map[string]int) {
	bad := false
	for i, s := range steps {
		if len(s.After) > MaxSteps {
			add(fmt.Sprintf("steps[%d].after", i), "more than %d entries", MaxSteps)
			bad = true
			continue
		}
		for k, a := range s.After {
			p := fmt.Sprintf("steps[%d].after[%d]", i, k)
			switch j, ok := ids[a]; {
			case !ok:
				add(p, "no step has id %q", clip(a))
				bad = true
			case j == i:
				add(p, "step %s cannot run after itself", a)
				bad = true
			}
		}
	}
	if bad {
		return
	}
	if _, cyc := order(steps, ids); cyc != nil {
		names := make([]string, len(cyc))
		for k, i := range cyc {
			names[k] = steps[i].ID
		}
		add(fmt.Sprintf("steps[%d].after", cyc[0]), "cycle %s", strings.Join(names, " -> "))
	}
}

// order is the executed order: a topological order of the after
// dependencies that keeps declaration order wherever they allow (among
// the steps ready, the first declared runs first). When there is none it
// returns a cycle as step indexes, first repeated last (a -> b -> a: a
// runs after b, which runs after a).
func order(steps []Step, ids map[string]int) ([]int, []int) {
	placed := make([]bool, len(steps))
	var out []int
	ready := func(i int) bool {
		for _, a := range steps[i].After {
			if j, ok := ids[a]; ok && !placed[j] {
				return false
			}
		}
		return true
	}
	for len(out) < len(steps) {
		next := -1
		for i := range steps {
			if !placed[i] && ready(i) {
				next = i
				break
			}
		}
		if next < 0 {
			return nil, cycle(steps, ids, placed)
		}
		placed[next] = true
		out = append(out, next)
	}
	return out, nil
}

// cycle walks unplaced dependencies from the first unplaced step until a
// step repeats: every unplaced step has one, so the walk finds a cycle.
func cycle(steps []Step, ids map[string]int, placed []bool) []int {
	at := slices.Index(placed, false)
	seen := map[int]int{}
	var path []int
	for {
		if k, ok := seen[at]; ok {
			return append(path[k:], at)
		}
		seen[at] = len(path)
		path = append(path, at)
		for _, a := range steps[at].After {
			if j := ids[a]; !placed[j] {
				at = j
				break
			}
		}
	}
}

// checkRefs refuses a ${name} that names no declared parameter.
func checkRefs(add addFunc, rb Runbook, declared map[string]bool) {
	for _, m := range refRE.FindAllStringSubmatch(rb.Description, -1) {
		if !declared[m[1]] {
			add("description", "unknown parameter ${%s} (declared: %s)", clip(m[1]), paramList(rb.Params))
		}
	}
	for i := range rb.Steps {
		p := fmt.Sprintf("steps[%d]", i)
		eachField(&rb.Steps[i], func(path string, f field) {
			for _, m := range refRE.FindAllStringSubmatch(*f.p, -1) {
				if !declared[m[1]] {
					add(p+path+"."+f.name, "unknown parameter ${%s} (declared: %s)", clip(m[1]), paramList(rb.Params))
				}
			}
		})
	}
}

// eachField calls fn on every string field of a step, with the field's
// parent path relative to the step ("", ".validate", ".rollback").
func eachField(s *Step, fn func(path string, f field)) {
	for _, f := range s.fields() {
		fn("", f)
	}
	if s.Validate != nil {
		for _, f := range s.Validate.fields() {
			fn(".validate", f)
		}
	}
	if s.Rollback != nil {
		for _, f := range s.Rollback.fields() {
			fn(".rollback", f)
		}
	}
}

func hasRef(s string) bool { return strings.Contains(s, "${") }

func parseTimeout(s string) (time.Duration, error) {
	d, err := duration.Parse(s)
	switch {
	case err != nil:
		return 0, err
	case d <= 0:
		return 0, fmt.Errorf("%q: must be more than 0", clip(s))
	case d > MaxTimeout:
		return 0, fmt.Errorf("%q: more than %s", clip(s), MaxTimeout)
	}
	return d, nil
}

// parseBytes reads a byte amount: digits, optionally followed by B, kB,
// MB, GB or TB (powers of 1024, as PostgreSQL writes them).
func parseBytes(s string) (int64, error) {
	num := strings.TrimRight(s, "kKMGTB")
	unit := s[len(num):]
	mult := map[string]int64{"": 1, "B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}[unit]
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if mult == 0 || err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a byte amount: want a number with an optional unit (B, kB, MB, GB, TB), as 16MB", clip(s))
	}
	if n > maxBytesAmount/mult {
		return 0, fmt.Errorf("%q is out of range", clip(s))
	}
	return n * mult, nil
}

func parseCount(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > MaxCount {
		return 0, fmt.Errorf("%q: want a whole number from 1 to %d", clip(s), MaxCount)
	}
	return n, nil
}

func actionList() string {
	s := make([]string, len(actions))
	for i, a := range actions {
		s[i] = string(a)
	}
	return strings.Join(s, ", ")
}

func condList(cs []Condition) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = string(c)
	}
	return strings.Join(s, ", ")
}

func paramList(ps []Param) string {
	if len(ps) == 0 {
		return "none"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.Name
	}
	return strings.Join(s, ", ")
}

// clip bounds a value quoted in an error, on a character boundary.
func clip(s string) string {
	n := 80
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}
