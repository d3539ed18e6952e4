package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/pgdr/pgdr/coordinator/outcome"
	"github.com/pgdr/pgdr/pkg/tlsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// DefaultTimeout bounds a whole command: connecting (to every address in
// turn) and the call.
const DefaultTimeout = 10 * time.Second

// connFlags are the connection settings, filled from the environment first
// and then from flags before or after the command name.
type connFlags struct {
	address   string
	ca        string
	cert      string
	key       string
	tokenFile string
	timeout   time.Duration
	// envToken is PGDR_TOKEN: the token itself, used when no token file is
	// named. It is never a flag, so it never shows up in help or ps.
	envToken string
}

func newConnFlags(getenv func(string) string) *connFlags {
	return &connFlags{
		address:   getenv("PGDR_ADDR"),
		ca:        getenv("PGDR_CA"),
		cert:      getenv("PGDR_CERT"),
		key:       getenv("PGDR_KEY"),
		tokenFile: getenv("PGDR_TOKEN_FILE"),
		timeout:   DefaultTimeout,
		envToken:  getenv("PGDR_TOKEN"),
	}
}

// register binds the connection flags to c with c's current values as
// defaults, so that a value given before the command survives the
// command's own FlagSet.
func (c *connFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.address, "address", c.address, "coordinator API addresses host:port, comma-separated, tried in order ($PGDR_ADDR)")
	fs.StringVar(&c.ca, "ca", c.ca, "CA certificate that signed the coordinators' certificates ($PGDR_CA)")
	fs.StringVar(&c.cert, "cert", c.cert, "client certificate; its OU is the role: read or admin ($PGDR_CERT)")
	fs.StringVar(&c.key, "key", c.key, "client certificate's key ($PGDR_KEY)")
	fs.StringVar(&c.tokenFile, "token-file", c.tokenFile, "file holding a bearer token ($PGDR_TOKEN_FILE; or the token in $PGDR_TOKEN)")
	fs.DurationVar(&c.timeout, "timeout", c.timeout, "time allowed for the whole command")
}

func isConnFlag(name string) bool {
	switch name {
	case "address", "ca", "cert", "key", "token-file", "timeout":
		return true
	}
	return false
}

// client calls the admin API on the first coordinator that answers.
type client struct {
	addrs   []string
	creds   credentials.TransportCredentials
	token   credentials.PerRPCCredentials // nil without a token
	timeout time.Duration
}

// client checks the connection settings and loads the TLS material. A
// setting that is missing or malformed is a usage error; a file that cannot
// be read is a failure.
func (c *connFlags) client() (*client, error) {
	var addrs []string
	for _, a := range strings.Split(c.address, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			return nil, usagef("--address: %q is not host:port", a)
		}
		addrs = append(addrs, a)
	}
	if len(addrs) == 0 {
		return nil, usagef("no coordinator address: pass --address host:port[,host:port...] or set PGDR_ADDR")
	}
	if c.ca == "" {
		return nil, usagef("no CA certificate: pass --ca FILE or set PGDR_CA (the CA that signed the coordinators' certificates; TLS is always on)")
	}
	if (c.cert == "") != (c.key == "") {
		return nil, usagef("a client certificate needs both --cert (PGDR_CERT) and --key (PGDR_KEY)")
	}
	if c.timeout <= 0 {
		return nil, usagef("--timeout must be positive, got %s", c.timeout)
	}
	cfg, err := tlsutil.ClientConfig(tlsutil.Files{CA: c.ca, Cert: c.cert, Key: c.key})
	if err != nil {
		return nil, fmt.Errorf("connection settings: %w", err)
	}
	cl := &client{addrs: addrs, creds: credentials.NewTLS(cfg), timeout: c.timeout}
	tok, err := c.bearerToken()
	if err != nil {
		return nil, err
	}
	if tok != "" {
		cl.token = bearer{token: tok}
	}
	return cl, nil
}

// bearerToken returns the token from --token-file / PGDR_TOKEN_FILE, else
// PGDR_TOKEN, else "". Errors name the file, never the content.
func (c *connFlags) bearerToken() (string, error) {
	if c.tokenFile == "" {
		return strings.TrimSpace(c.envToken), nil
	}
	b, err := os.ReadFile(c.tokenFile)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", c.tokenFile)
	}
	if strings.ContainsAny(tok, "\r\n") {
		return "", fmt.Errorf("token file %s holds more than one line", c.tokenFile)
	}
	return tok, nil
}

// bearer sends the token as "authorization: Bearer <token>" metadata. Its
// String hides the token so that no %v of it can leak it into a log.
type bearer struct{ token string }

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity is true: a token must never cross the network in
// clear text.
func (bearer) RequireTransportSecurity() bool { return true }

func (bearer) String() string   { return "bearer(redacted)" }
func (bearer) GoString() string { return "bearer(redacted)" }

// rpcError is a call that failed, printed as "<method>: <status message>".
type rpcError struct {
	method string
	err    error
	// tried lists "address: message" for each address that could not be
	// used, when there was more than one.
	tried []string
	// write: the method changes something (its outcome may be unknown).
	write bool
}

func (e *rpcError) Error() string {
	if len(e.tried) > 1 {
		return fmt.Sprintf("%s: no coordinator answered: %s", e.method, strings.Join(e.tried, "; "))
	}
	st := status.Convert(e.err)
	msg := st.Message()
	switch st.Code() {
	case codes.PermissionDenied:
		if !strings.Contains(msg, "role") {
			msg += fmt.Sprintf(" (%s needs role %s)", e.method, roleFor(e.method))
		}
	case codes.Unauthenticated:
		msg += fmt.Sprintf(" (%s needs role %s: present a client certificate with --cert/--key or a bearer token with --token-file or PGDR_TOKEN)", e.method, roleFor(e.method))
	case codes.DeadlineExceeded:
		msg += " (see --timeout)"
		if e.write {
			msg += "; the change may have been submitted: check pgdrctl history before repeating it"
		}
	}
	return fmt.Sprintf("%s: %s", e.method, msg)
}

func (e *rpcError) Unwrap() error { return e.err }

// roleFor mirrors admin.proto: reading needs "read", changing needs "admin".
func roleFor(method string) string {
	switch method {
	case "Status", "Members", "History", "GetBackupPolicy", "ListBackupRuns", "Report":
		return tlsutil.RoleRead
	}
	return tlsutil.RoleAdmin
}

// call runs fn against the first coordinator that answers and returns the
// address that did. A read moves on to the next address after any
// codes.Unavailable. A write moves on only when the error proves it was not
// submitted: the connection never became ready (a fail-fast call on it is
// not sent), or the coordinator said so (outcome.NotSubmitted). Any other
// answer is final, so that a write is never sent twice; a bare Unavailable
// after the request went out says the outcome is unknown.
func (c *client) call(ctx context.Context, method string, fn func(context.Context, pgdrv1.AdminServiceClient) error) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	write := roleFor(method) == tlsutil.RoleAdmin
	var tried []string
	var last error
	for i, addr := range c.addrs {
		sent, err := c.attempt(ctx, addr, len(c.addrs)-i, fn)
		if err == nil {
			return addr, nil
		}
		last = err
		tried = append(tried, addr+": "+status.Convert(err).Message())
		if !retryable(err, write, sent) || ctx.Err() != nil {
			if status.Code(err) != codes.Unavailable || write && sent && !outcome.IsNotSubmitted(err) {
				tried = nil // the answer is the server's, not a list of failures
			}
			if write && sent && status.Code(err) == codes.Unavailable && !outcome.IsNotSubmitted(err) {
				last = outcome.Unknown(addr, err)
			}
			break
		}
	}
	return "", &rpcError{method: method, err: last, tried: tried, write: write}
}

// retryable is the rule for moving on to the next address: a read after
// any Unavailable; a write only after an error that proves it was not
// submitted.
func retryable(err error, write, sent bool) bool {
	if status.Code(err) != codes.Unavailable {
		return false
	}
	return !write || !sent || outcome.IsNotSubmitted(err)
}

// attempt makes one call on addr. Connecting gets a fair share of the time
// left (left addresses remain) so that one unreachable address cannot use
// up the whole --timeout. sent is false when the request cannot have left:
// the connection was not ready when the (fail-fast) call was made.
func (c *client) attempt(ctx context.Context, addr string, left int, fn func(context.Context, pgdrv1.AdminServiceClient) error) (sent bool, err error) {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(c.creds)}
	if c.token != nil {
		opts = append(opts, grpc.WithPerRPCCredentials(c.token))
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return false, status.Errorf(codes.Unavailable, "%v", err)
	}
	defer cc.Close()
	if err := waitConnected(ctx, cc, addr, connectBudget(ctx, left)); err != nil {
		return false, err
	}
	ready := cc.GetState() == connectivity.Ready
	return ready, fn(ctx, pgdrv1.NewAdminServiceClient(cc))
}

func connectBudget(ctx context.Context, left int) time.Duration {
	dl, ok := ctx.Deadline()
	if !ok || left < 1 {
		return DefaultTimeout
	}
	return time.Until(dl) / time.Duration(left)
}

// waitConnected waits until cc is ready or has failed to connect. On a
// failure it returns nil: the fail-fast call that follows reports the
// transport's own reason (refused, TLS verification, ...) as Unavailable.
func waitConnected(ctx context.Context, cc *grpc.ClientConn, addr string, budget time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	cc.Connect()
	for {
		s := cc.GetState()
		if s == connectivity.Ready || s == connectivity.TransientFailure {
			return nil
		}
		if !cc.WaitForStateChange(wctx, s) {
			if errors.Is(ctx.Err(), context.Canceled) {
				return status.FromContextError(ctx.Err()).Err()
			}
			return status.Errorf(codes.Unavailable, "no connection to %s within %s", addr, budget.Round(time.Millisecond))
		}
	}
}
