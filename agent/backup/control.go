package backup

import (
	"bytes"
	"context"
	"fmt"
	"io"
)

// controlFile is PostgreSQL's control file, relative to PGDATA.
const controlFile = "global/pg_control"

// readControl reads global/pg_control for the backup until its CRC checks
// (c.control, a pgcontrol.Reader: PostgreSQL rewrites it in place, and a read racing a
// rewrite is torn; a restored cluster refuses a torn copy). The copy is
// then stored from memory, exactly the bytes checked.
func (c *copier) readControl(ctx context.Context, wf walkFile) (*io.SectionReader, error) {
	b, err := c.control.Read(ctx, wf.abs)
	if err != nil {
		return nil, fmt.Errorf("backing up %s: %w", wf.rel, err)
	}
	return io.NewSectionReader(bytes.NewReader(b), 0, int64(len(b))), nil
}
