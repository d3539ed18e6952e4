package config

import "strings"

// SlotPrefix begins the name of every replication slot pgdr manages.
const SlotPrefix = "pgdr_"

// ReceiverSlot is the default physical replication slot name of node's WAL
// receiver: "pgdr_" then the node name lower-cased with every character
// other than a-z, 0-9 and _ replaced by _, at most 63 characters (what
// PostgreSQL allows). The coordinators drop a slot of this form whose node
// is no longer a member, or unused too long (coordinator/slots).
func ReceiverSlot(node string) string {
	var b strings.Builder
	b.WriteString(SlotPrefix)
	for _, r := range strings.ToLower(node) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	s := b.String()
	if len(s) > 63 {
		s = s[:63]
	}
	return s
}
