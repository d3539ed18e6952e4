package divergencesum

import "testing"

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"public.orders":           "public.orders",
		"public.\"Ünïcode\" name": "public.\"Ünïcode\" name",
		"a\x1b[31mred":            `a\x1b[31mred`,
		"t\x07\n\tx":              `t\a\n\tx`,
		"c1\u009b2J":              `c1\u009b2J`,
		"bad\xffbyte":             `bad\xffbyte`,
		"bidi\u202eevil":          `bidi\u202eevil`,
	} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
}
