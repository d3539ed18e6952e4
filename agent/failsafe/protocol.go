package failsafe

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Path is the agent's failsafe endpoint; SignatureHeader carries
// "sha256=" + hex(HMAC-SHA256(gossip key, body)).
const (
	Path            = "/failsafe"
	SignatureHeader = "X-Pgdr-Signature"
	// maxSkew bounds how far sent_at may be from the receiver's wall
	// clock (a replayed ping is refused once it is older).
	maxSkew = time.Minute
)

// Ping is the body of a failsafe ping.
type Ping struct {
	Cluster string    `json:"cluster"`
	Primary string    `json:"primary"`
	Epoch   uint64    `json:"epoch"`
	SentAt  time.Time `json:"sent_at"`
	// LeaseTTLMs is the lease TTL the primary's failsafe window derives
	// from (its own, or the last grant's when smaller): the member refuses
	// promotion for the larger of it and its own TTL (0: an agent that
	// does not send it; the member's own TTL then).
	LeaseTTLMs int64 `json:"lease_ttl_ms,omitempty"`
	// Nonce: random, fresh for each ping; the acknowledgement signs it.
	Nonce string `json:"nonce,omitempty"`
}

// answer is the body of an acknowledgement (200).
type answer struct {
	Acknowledged bool   `json:"acknowledged"`
	Node         string `json:"node"`
	Primary      string `json:"primary"`
	Epoch        uint64 `json:"epoch"`
	// Signature: Ed25519 by the member's failsafe key over ackMessage,
	// base64.
	Signature string `json:"signature"`
}

// ackMessage is what a member signs to acknowledge ping p.
func ackMessage(node string, p Ping) []byte {
	return fmt.Appendf(nil, "pgdr failsafe ack v1\ncluster=%s\nnode=%s\nprimary=%s\nepoch=%d\nnonce=%s\n",
		p.Cluster, node, p.Primary, p.Epoch, p.Nonce)
}

// verifyAck reports whether body (a member's 200 answer) is node's
// acknowledgement of ping p, signed with key (its registered public key).
func verifyAck(key []byte, node string, p Ping, body []byte) error {
	if len(key) != ed25519.PublicKeySize {
		return fmt.Errorf("no failsafe key of %s is recorded in Raft", node)
	}
	var a answer
	if err := json.Unmarshal(body, &a); err != nil {
		return fmt.Errorf("answer of %s: %w", node, err)
	}
	sig, err := base64.StdEncoding.DecodeString(a.Signature)
	if err != nil || !a.Acknowledged || !ed25519.Verify(ed25519.PublicKey(key), ackMessage(node, p), sig) {
		return fmt.Errorf("answer of %s is not signed by its registered failsafe key over this ping's nonce", node)
	}
	return nil
}

// Sign returns the signature header value of body under key.
func Sign(key, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks sig (Sign's form) in constant time.
func Verify(key, body []byte, sig string) bool {
	h, ok := strings.CutPrefix(strings.TrimSpace(sig), "sha256=")
	if !ok || len(key) == 0 {
		return false
	}
	got, err := hex.DecodeString(h)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}
