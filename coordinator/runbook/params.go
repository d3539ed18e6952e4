package runbook

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Resolve returns the runbook with every ${name} replaced by the value
// given at run time or the parameter's default, and checks the result
// (Validate, now with the values in place). Refused, naming the field: a
// given parameter the runbook does not declare, a required one not
// given, a value too long or itself holding "${", and a reference to an
// undeclared parameter (steps[1].to_region).
func Resolve(rb Runbook, params map[string]string) (Runbook, error) {
	if err := Validate(rb); err != nil {
		return Runbook{}, err
	}
	vals, err := values(rb.Params, params)
	if err != nil {
		return Runbook{}, fmt.Errorf("%w %q: %w", ErrInvalid, rb.Name, err)
	}
	out := clone(rb)
	sub := func(s string) string {
		return refRE.ReplaceAllStringFunc(s, func(m string) string { return vals[m[2:len(m)-1]] })
	}
	out.Description = sub(out.Description)
	for i := range out.Steps {
		eachField(&out.Steps[i], func(_ string, f field) {
			*f.p = sub(*f.p)
		})
	}
	if err := Validate(out); err != nil {
		return Runbook{}, err
	}
	return out, nil
}

// values is the value of every declared parameter.
func values(decl []Param, given map[string]string) (map[string]string, error) {
	var errs []error
	names := make([]string, 0, len(given))
	for k := range given {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if !slices.ContainsFunc(decl, func(p Param) bool { return p.Name == k }) {
			errs = append(errs, fmt.Errorf("params: unknown parameter %q (declared: %s)", clip(k), paramList(decl)))
		}
	}
	out := map[string]string{}
	for _, p := range decl {
		v, ok := given[p.Name]
		switch {
		case !ok && p.Required:
			errs = append(errs, fmt.Errorf("params: %s required but not given", p.Name))
			continue
		case !ok:
			v = p.Default
		case p.Required && strings.TrimSpace(v) == "":
			errs = append(errs, fmt.Errorf("params: %s required but given empty", p.Name))
		case len(v) > MaxText:
			errs = append(errs, fmt.Errorf("params: %s longer than %d bytes", p.Name, MaxText))
		case strings.Contains(v, "${"):
			errs = append(errs, fmt.Errorf("params: %s: a value cannot hold \"${\"", p.Name))
		}
		out[p.Name] = v
	}
	return out, errors.Join(errs...)
}

// clone copies a runbook deeply enough that substituting its fields
// leaves the original unchanged.
func clone(rb Runbook) Runbook {
	out := rb
	out.Params = slices.Clone(rb.Params)
	out.Steps = slices.Clone(rb.Steps)
	for i, s := range out.Steps {
		out.Steps[i].After = slices.Clone(s.After)
		if s.Validate != nil {
			v := *s.Validate
			out.Steps[i].Validate = &v
		}
		if s.Rollback != nil {
			r := *s.Rollback
			out.Steps[i].Rollback = &r
		}
	}
	return out
}
