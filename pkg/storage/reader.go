package storage

import (
	"context"
	"fmt"
	"io"
)

// SizeCheckReader wraps r and fails with ErrSizeMismatch as soon as the
// stream proves longer than size, or ends shorter than size. With size < 0
// it only counts. Backends use it so that a wrong declared size is detected
// before the object is made visible.
type SizeCheckReader struct {
	r    io.Reader
	size int64
	n    int64
}

// NewSizeCheckReader returns a SizeCheckReader over r expecting size bytes
// (-1 for unknown).
func NewSizeCheckReader(r io.Reader, size int64) *SizeCheckReader {
	return &SizeCheckReader{r: r, size: size}
}

// N returns the number of bytes read so far.
func (s *SizeCheckReader) N() int64 { return s.n }

// Read implements io.Reader.
func (s *SizeCheckReader) Read(p []byte) (int, error) {
	if s.size >= 0 {
		// Read at most one byte past the declared size: enough to prove the
		// stream is too long without pulling an unbounded amount of data.
		if limit := s.size - s.n + 1; int64(len(p)) > limit {
			p = p[:limit]
		}
	}
	n, err := s.r.Read(p)
	s.n += int64(n)
	if s.size >= 0 {
		if s.n > s.size {
			return n, fmt.Errorf("%w: stream is longer than the declared %d bytes", ErrSizeMismatch, s.size)
		}
		if err == io.EOF && s.n != s.size {
			return n, fmt.Errorf("%w: stream ended after %d of the declared %d bytes", ErrSizeMismatch, s.n, s.size)
		}
	}
	return n, err
}

// ContextReader returns a reader that fails with ctx's error once ctx is
// done. Put implementations wrap the caller's stream in it because an
// io.Reader (a pipe from pg_basebackup, say) knows nothing of the context, and
// a cancelled Put must stop pulling data promptly.
func ContextReader(ctx context.Context, r io.Reader) io.Reader {
	return &ctxReader{ctx: ctx, r: r}
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
