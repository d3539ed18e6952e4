package objstream

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Signing errors; test with errors.Is.
var (
	// ErrUnencrypted reports an object whose header says encryption:
	// none read where encryption is configured: anyone who can write to
	// the bucket can make such an object, no key needed.
	ErrUnencrypted = errors.New("objstream: unencrypted object refused (encryption is configured)")
	// ErrUnsigned reports an object without a signature read where
	// signatures are required.
	ErrUnsigned = errors.New("objstream: unsigned object refused (signing is configured)")
	// ErrBadSignature reports a signature that does not verify, or one
	// made with a key that is not trusted.
	ErrBadSignature = errors.New("objstream: bad object signature")
)

const (
	// PublicKeyPrefix starts the text form of a signing public key.
	PublicKeyPrefix = "pgdr-ed25519:"
	// secretKeyPrefix starts the line of a signing key file holding the
	// Ed25519 seed.
	secretKeyPrefix = "PGDR-ED25519-SECRET-KEY:"
	// sigContext separates object signatures from any other use of the key.
	sigContext = "pgdr-object-signature-v1\n"
)

// PublicKey is an Ed25519 key that object signatures are checked with.
type PublicKey struct {
	key ed25519.PublicKey
	id  string
}

// ID is the key's short identifier: the first 8 bytes of the SHA-256 of
// the key, in hex. Objects record the ID of the key that signed them.
func (k PublicKey) ID() string { return k.id }

// String returns the key in its text form, "pgdr-ed25519:<base64>".
func (k PublicKey) String() string {
	return PublicKeyPrefix + base64.RawStdEncoding.EncodeToString(k.key)
}

func newPublicKey(pub ed25519.PublicKey) PublicKey {
	s := sha256.Sum256(pub)
	return PublicKey{key: pub, id: hex.EncodeToString(s[:8])}
}

// ParsePublicKey parses "pgdr-ed25519:<base64>".
func ParsePublicKey(s string) (PublicKey, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, secretKeyPrefix) {
		return PublicKey{}, errors.New("objstream: this is a signing secret key, not a public key; use the \"# public key: pgdr-ed25519:...\" line of the key file")
	}
	b64, ok := strings.CutPrefix(s, PublicKeyPrefix)
	if !ok {
		return PublicKey{}, fmt.Errorf("objstream: %q is not a signing public key (want %s...)", abbrev(s), PublicKeyPrefix)
	}
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(b64, "="))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return PublicKey{}, fmt.Errorf("objstream: %q is not a valid Ed25519 public key (want %d bytes of base64)", abbrev(s), ed25519.PublicKeySize)
	}
	return newPublicKey(ed25519.PublicKey(b)), nil
}

// Signer signs objects as they are written (see Options.Signer).
type Signer struct {
	key ed25519.PrivateKey
	pub PublicKey
}

// Public returns the signer's public key.
func (s *Signer) Public() PublicKey { return s.pub }

// sign returns the signature over an object's identity.
func (s *Signer) sign(name string, sum []byte, size int64) []byte {
	return ed25519.Sign(s.key, sigMessage(name, sum, size))
}

// sigMessage is what an object signature covers: the object's name (its
// key in the repository, so a signed object is only valid under its own
// name), the SHA-256 of its plaintext and the plaintext's size. The reader
// checks the plaintext against both before returning io.EOF.
func sigMessage(name string, sum []byte, size int64) []byte {
	return []byte(sigContext + name + "\nsha256:" + hex.EncodeToString(sum) + "\nsize:" + strconv.FormatInt(size, 10) + "\n")
}

// Verifier checks object signatures against a set of trusted public keys.
// Several keys may be trusted at once (key rotation: writers sign with the
// new key while objects signed with the old one are still read).
type Verifier struct {
	keys map[string]PublicKey
	// Require refuses unsigned objects (ErrUnsigned). Without it an
	// unsigned object is read unverified (a repository written before
	// signing was configured); a signed one is always verified.
	Require bool
}

// NewVerifier returns a verifier trusting keys. At least one key is needed.
func NewVerifier(keys []PublicKey, require bool) (*Verifier, error) {
	if len(keys) == 0 {
		return nil, errors.New("objstream: no signing public keys given")
	}
	v := &Verifier{keys: map[string]PublicKey{}, Require: require}
	for _, k := range keys {
		v.keys[k.id] = k
	}
	return v, nil
}

// KeyIDs returns the IDs of the trusted keys.
func (v *Verifier) KeyIDs() []string {
	ids := make([]string, 0, len(v.keys))
	for id := range v.keys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// VerifyHeader checks the signature in h, an object's header read with
// ReadHeader, for the object stored as name: what a Reader checks before
// reading the body. A nil Verifier accepts everything.
func (v *Verifier) VerifyHeader(h Header, name string) error {
	if v == nil {
		return nil
	}
	return v.verify(h, name)
}

// verify checks the signature in h for the object called name. The
// plaintext itself is checked against h.PlainSHA256 and h.PlainSize by the
// Reader before it returns io.EOF.
func (v *Verifier) verify(h Header, name string) error {
	if h.Signature == nil {
		if v.Require {
			return fmt.Errorf("%w: object %s carries no signature (written by a writer without signing.key_file, or not by pgdr)", ErrUnsigned, name)
		}
		return nil
	}
	k, ok := v.keys[h.SignerID]
	if !ok {
		return fmt.Errorf("%w: object %s is signed with key %s, which is not among the %d trusted signing keys (%s)",
			ErrBadSignature, name, h.SignerID, len(v.keys), strings.Join(v.KeyIDs(), ", "))
	}
	if h.PlainSHA256 == nil || h.PlainSize < 0 {
		return fmt.Errorf("%w: object %s is signed (key %s) but its header lacks the plaintext size or SHA-256", ErrBadSignature, name, h.SignerID)
	}
	if !ed25519.Verify(k.key, sigMessage(name, h.PlainSHA256, h.PlainSize), h.Signature) {
		return fmt.Errorf("%w: object %s: the signature by key %s does not match the object's name, size and SHA-256 (forged, or stored under another name)", ErrBadSignature, name, h.SignerID)
	}
	return nil
}

// LoadSigner reads a signing key file written by GenerateSigningKey.
// Errors name the file.
func LoadSigner(path string) (*Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("objstream: loading signing key: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var signer *Signer
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		b64, ok := strings.CutPrefix(l, secretKeyPrefix)
		if !ok || signer != nil {
			return nil, fmt.Errorf("objstream: signing key file %s: want one %s... line", path, secretKeyPrefix)
		}
		seed, err := base64.RawStdEncoding.DecodeString(b64)
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("objstream: signing key file %s: malformed secret key", path)
		}
		priv := ed25519.NewKeyFromSeed(seed)
		signer = &Signer{key: priv, pub: newPublicKey(priv.Public().(ed25519.PublicKey))}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("objstream: reading signing key file %s: %w", path, err)
	}
	if signer == nil {
		return nil, fmt.Errorf("objstream: signing key file %s holds no %s... line", path, secretKeyPrefix)
	}
	return signer, nil
}

// GenerateSigningKey creates a new Ed25519 signing key and writes it to a
// new file at path with mode 0600:
//
//	# created: 2006-01-02T15:04:05Z07:00
//	# public key: pgdr-ed25519:...
//	PGDR-ED25519-SECRET-KEY:...
//
// It refuses to overwrite an existing file and returns the public key.
func GenerateSigningKey(path string) (PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return PublicKey{}, fmt.Errorf("objstream: generating signing key: %w", err)
	}
	pk := newPublicKey(pub)
	content := fmt.Sprintf("# created: %s\n# key id: %s\n# public key: %s\n%s%s\n",
		time.Now().Format(time.RFC3339), pk.ID(), pk, secretKeyPrefix, base64.RawStdEncoding.EncodeToString(priv.Seed()))
	if err := createKeyFile(path, "signing key", content); err != nil {
		return PublicKey{}, err
	}
	return pk, nil
}
