package e2e

import (
	"bytes"
	"sync"
)

// syncBuffer is a bytes.Buffer safe for a process's concurrent writes.
// The buffer is a named field, not embedded: an embedded bytes.Buffer
// would promote ReadFrom, which os/exec's copying goroutine uses (through
// io.Copy) in place of Write, bypassing the lock.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
