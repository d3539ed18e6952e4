package tiername

// MaxLen is the longest tier name, in bytes.
const MaxLen = 63

// Rule says in words what Valid accepts, for error messages and help.
const Rule = "lower-case letters, digits, '_' and '-', starting with a letter or digit, at most 63"

// Valid reports whether s is a tier name: ^[a-z0-9][a-z0-9_-]{0,62}$.
// Lower case only, so that one tier cannot be told apart from another by
// case alone in manifests, object listings or flags.
func Valid(s string) bool {
	if len(s) == 0 || len(s) > MaxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		alnum := ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9'
		if !alnum && (i == 0 || ch != '_' && ch != '-') {
			return false
		}
	}
	return true
}
