package s3store

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/pgdr/pgdr/pkg/storage"
)

// Limits of the S3 multipart API.
const (
	minPartSize = 5 << 20
	maxPartSize = 5 << 30
	maxParts    = 10000
)

// Defaults for zero Options fields.
const (
	DefaultPartSize    = 16 << 20
	DefaultConcurrency = 4
	DefaultMaxAttempts = 5
)

// cleanupTimeout bounds the requests that tidy up after a failed Put (abort,
// delete, verify). They run even when the caller's context is cancelled:
// an abandoned multipart upload keeps costing storage until it is aborted.
const cleanupTimeout = 30 * time.Second

// Options configures a Store.
type Options struct {
	Bucket string
	// Prefix is prepended to every key ("pgdr/prod" and "pgdr/prod/" are
	// the same); it is not part of the keys List reports.
	Prefix string

	// Endpoint is the base URL of an S3-compatible server, e.g.
	// "http://127.0.0.1:7070"; empty means AWS.
	Endpoint string
	// Region defaults to the AWS configuration's region, else us-east-1.
	Region string
	// PathStyle addresses buckets as endpoint/bucket instead of
	// bucket.endpoint; most S3-compatible servers need it.
	PathStyle bool

	// Static credentials. When AccessKeyID is empty the default AWS
	// credential chain is used (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
	// shared credentials and config files, web identity, ECS/EC2 roles).
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string

	// PartSize is the size of multipart upload parts (default 16 MiB,
	// at least 5 MiB). Objects up to PartSize are sent in one PutObject.
	PartSize int64
	// Concurrency is the number of parts of one Put in flight at once
	// (default 4); it bounds a Put's memory to PartSize*Concurrency.
	Concurrency int
	// MaxAttempts is the number of attempts per request, including the
	// first, before an error is returned (default 5).
	MaxAttempts int

	// Logger receives warnings (e.g. a multipart upload that could not be
	// aborted); default slog.Default().
	Logger *slog.Logger
}

// Store is a storage.ObjectStore in an S3 bucket. It is immutable after New
// and safe for concurrent use.
type Store struct {
	client      *s3.Client
	bucket      string
	prefix      string // "" or ending in '/'
	endpoint    string // "" for AWS's own; named in explanations
	partSize    int64
	concurrency int
	log         *slog.Logger
}

var _ storage.ObjectStore = (*Store)(nil)

// New returns a Store for opts. It resolves credentials eagerly, so a
// repository without usable credentials fails here with an error that says
// what to set, rather than on the first upload. It makes no request to the
// bucket itself.
func New(ctx context.Context, opts Options) (*Store, error) {
	if opts.Bucket == "" {
		return nil, errors.New("s3: empty bucket name")
	}
	prefix := strings.Trim(opts.Prefix, "/")
	if prefix != "" {
		if err := storage.ValidateKey(prefix); err != nil {
			return nil, fmt.Errorf("s3://%s: bad prefix: %w", opts.Bucket, err)
		}
		prefix += "/"
	}
	s := &Store{
		bucket:      opts.Bucket,
		prefix:      prefix,
		endpoint:    opts.Endpoint,
		partSize:    cmp.Or(opts.PartSize, DefaultPartSize),
		concurrency: cmp.Or(opts.Concurrency, DefaultConcurrency),
		log:         cmp.Or(opts.Logger, slog.Default()),
	}
	if s.partSize < minPartSize || s.partSize > maxPartSize {
		return nil, fmt.Errorf("%s: part size %d out of range [%d, %d]", s, s.partSize, minPartSize, maxPartSize)
	}
	if s.concurrency < 1 {
		return nil, fmt.Errorf("%s: concurrency %d must be at least 1", s, s.concurrency)
	}
	maxAttempts := cmp.Or(opts.MaxAttempts, DefaultMaxAttempts)
	if maxAttempts < 1 {
		return nil, fmt.Errorf("%s: max attempts %d must be at least 1", s, maxAttempts)
	}

	loadOpts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = maxAttempts
				o.RateLimiter = ratelimit.None
			})
		}),
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}
	if opts.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(opts.Region))
	}
	if opts.AccessKeyID != "" || opts.SecretAccessKey != "" {
		if opts.AccessKeyID == "" || opts.SecretAccessKey == "" {
			return nil, fmt.Errorf("%s: both an access key id and a secret access key are needed, got only one", s)
		}
		loadOpts = append(loadOpts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(opts.AccessKeyID, opts.SecretAccessKey, opts.SessionToken)))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("%s: load AWS configuration: %w", s, err)
	}
	if cfg.Region == "" {
		// S3-compatible servers mostly ignore the region, but SigV4 needs one.
		cfg.Region = "us-east-1"
	}
	if cfg.Credentials == nil {
		return nil, s.noCredentials(errors.New("no credential provider configured"))
	}
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		return nil, s.noCredentials(err)
	}

	s.client = s3.NewFromConfig(cfg, func(o *s3.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
		o.UsePathStyle = opts.PathStyle
		// An AWS_MAX_ATTEMPTS in the environment must not override the
		// repository's setting; the client applies this on top of Retryer.
		o.RetryMaxAttempts = maxAttempts
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	return s, nil
}

func (s *Store) noCredentials(err error) error {
	return fmt.Errorf("no S3 credentials for %s: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "+
		"or s3.access_key_id_file/s3.secret_access_key_file in the repository configuration "+
		"(or use an AWS profile or instance role): %w", s, err)
}

// String returns s3://bucket/prefix (s3://bucket without a prefix). It never
// includes credentials.
func (s *Store) String() string {
	if s.prefix == "" {
		return "s3://" + s.bucket
	}
	return "s3://" + s.bucket + "/" + strings.TrimSuffix(s.prefix, "/")
}

// objectURL names one object in error messages.
func (s *Store) objectURL(key string) string {
	return "s3://" + s.bucket + "/" + s.prefix + key
}

func (s *Store) checkKey(key string) error {
	if err := storage.ValidateKey(key); err != nil {
		return fmt.Errorf("%s: %w", s, err)
	}
	return nil
}

// wrap adds the operation, key and object URL to err and maps "no such
// key" answers to storage.ErrNotFound.
func (s *Store) wrap(op, key string, err error) error {
	if isNotFound(err) {
		return fmt.Errorf("%s %q (%s): %w: %w", op, key, s.objectURL(key), storage.ErrNotFound, err)
	}
	return fmt.Errorf("%s %q (%s): %w", op, key, s.objectURL(key), err)
}

// isNotFound reports whether err says the object does not exist. A missing
// bucket is also a 404 but is a configuration error, not a missing object,
// so it is told apart by its code where the response has one (HeadObject
// responses have no body and therefore no code).
func isNotFound(err error) bool {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return true
		case "NoSuchBucket":
			return false
		}
	}
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return true
	}
	var re *awshttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound &&
		(apiErr == nil || apiErr.ErrorCode() != "NoSuchBucket")
}

// Get implements storage.ObjectStore.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := s.checkKey(key); err != nil {
		return nil, err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String(s.bucket),
		Key:    aws.String(s.prefix + key),
	})
	if err != nil {
		return nil, s.wrap("get", key, err)
	}
	return out.Body, nil
}

// Stat implements storage.ObjectStore.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if err := s.checkKey(key); err != nil {
		return storage.ObjectInfo{}, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket: aws.String(s.bucket),
		Key:    aws.String(s.prefix + key),
	})
	if err != nil {
		return storage.ObjectInfo{}, s.wrap("stat", key, err)
	}
	return storage.ObjectInfo{
		Key:     key,
		Size:    aws.ToInt64(out.ContentLength),
		ModTime: aws.ToTime(out.LastModified),
	}, nil
}

// Delete implements storage.ObjectStore. S3 answers a delete of a missing
// key with success; a server that says NoSuchKey instead is treated the same.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.checkKey(key); err != nil {
		return err
	}
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{
		Bucket: aws.String(s.bucket),
		Key:    aws.String(s.prefix + key),
	})
	if err != nil && !isNotFound(err) {
		return s.wrap("delete", key, err)
	}
	return nil
}

// DeleteBatch implements storage.BatchDeleter with one DeleteObjects
// request (quiet: only failures are listed in the answer).
func (s *Store) DeleteBatch(ctx context.Context, keys []string) error {
	if len(keys) > storage.MaxBatchDelete {
		return fmt.Errorf("%s: delete batch of %d keys (at most %d)", s, len(keys), storage.MaxBatchDelete)
	}
	if len(keys) == 0 {
		return nil
	}
	ids := make([]types.ObjectIdentifier, 0, len(keys))
	for _, k := range keys {
		if err := s.checkKey(k); err != nil {
			return err
		}
		ids = append(ids, types.ObjectIdentifier{Key: aws.String(s.prefix + k)})
	}
	out, err := s.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
		Bucket: aws.String(s.bucket),
		Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)},
	})
	if err != nil {
		return fmt.Errorf("delete %d objects from %s (first %q): %w", len(keys), s, keys[0], err)
	}
	var failed []string
	var first error
	for _, e := range out.Errors {
		if aws.ToString(e.Code) == "NoSuchKey" {
			continue
		}
		k := strings.TrimPrefix(aws.ToString(e.Key), s.prefix)
		failed = append(failed, k)
		if first == nil {
			first = fmt.Errorf("delete %q (%s): %s: %s", k, s.objectURL(k), aws.ToString(e.Code), aws.ToString(e.Message))
		}
	}
	if len(failed) > 0 {
		return &storage.BatchDeleteError{Failed: failed, Err: fmt.Errorf("%w (%d of %d keys failed)", first, len(failed), len(keys))}
	}
	return nil
}

// List implements storage.ObjectStore. S3 lists keys in UTF-8 byte order,
// which is Go's string order, so pages are passed through as they come.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	return s.ListRange(ctx, prefix, "", "", fn)
}

// ListDirs implements storage.DirLister: ListObjectsV2 with delimiter
// '/' answers the key segments under prefix (1000 a request), not the keys
// below them.
func (s *Store) ListDirs(ctx context.Context, prefix string) ([]string, error) {
	if err := storage.ValidatePrefix(prefix); err != nil || !strings.HasSuffix(prefix, "/") {
		return nil, fmt.Errorf("%s: list directories of %q: not a prefix ending in '/' (%v)", s, prefix, err)
	}
	full := s.prefix + prefix
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{
		Bucket:    aws.String(s.bucket),
		Prefix:    aws.String(full),
		Delimiter: aws.String("/"),
	})
	var out []string
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list directories of %q (%s): %w", prefix, s.objectURL(prefix), err)
		}
		for _, cp := range page.CommonPrefixes {
			name, ok := strings.CutPrefix(aws.ToString(cp.Prefix), full)
			if name, ok2 := strings.CutSuffix(name, "/"); ok && ok2 && name != "" && !strings.Contains(name, "/") {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// ListRange implements storage.RangeLister: StartAfter is after, and the
// listing stops at the first key past upTo.
func (s *Store) ListRange(ctx context.Context, prefix, after, upTo string, fn func(storage.ObjectInfo) error) error {
	if err := storage.ValidatePrefix(prefix); err != nil {
		return fmt.Errorf("%s: list: %w", s, err)
	}
	in := &s3.ListObjectsV2Input{
		Bucket: aws.String(s.bucket),
		Prefix: aws.String(s.prefix + prefix),
	}
	if after != "" {
		in.StartAfter = aws.String(s.prefix + after)
	}
	p := s3.NewListObjectsV2Paginator(s.client, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list %q (%s): %w", prefix, s.objectURL(prefix), err)
		}
		for _, obj := range page.Contents {
			key, ok := strings.CutPrefix(aws.ToString(obj.Key), s.prefix)
			// "dir/" markers made by consoles and other tools are not
			// objects pgdr can have written; skip rather than report
			// keys that every other method would reject.
			if !ok || key == "" || strings.HasSuffix(key, "/") {
				continue
			}
			if upTo != "" && key > upTo {
				return nil
			}
			if err := fn(storage.ObjectInfo{
				Key:     key,
				Size:    aws.ToInt64(obj.Size),
				ModTime: aws.ToTime(obj.LastModified),
			}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Put implements storage.ObjectStore.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := s.checkKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return s.wrap("put", key, err)
	}
	sent, err := s.put(ctx, key, r, size)
	if err != nil {
		// Name the caller's cancellation even when a part upload reported
		// something else first, so callers can tell "stopped" from "failed".
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w: %w", cerr, err)
		}
		return s.wrap("put", key, err)
	}
	if err := s.verify(ctx, key, sent); err != nil {
		return s.wrap("put", key, err)
	}
	return nil
}

// put uploads the object and returns the number of bytes sent.
func (s *Store) put(ctx context.Context, key string, r io.Reader, size int64) (int64, error) {
	partSize := s.partSize
	if size > 0 {
		// Keep a known-size object within the part limit.
		partSize = max(partSize, (size+maxParts-1)/maxParts)
	}
	src := storage.NewSizeCheckReader(storage.ContextReader(ctx, r), size)
	// With a known size, allocate just enough (plus the byte that proves
	// EOF) instead of growing towards a whole part.
	hint := partSize
	if size >= 0 {
		hint = min(size+1, partSize)
	}
	first, eof, err := readPart(src, make([]byte, 0, hint), partSize)
	if err != nil {
		return 0, err
	}
	if !eof {
		// The first part is full: peek one byte to tell an object of
		// exactly one part (a 16 MiB WAL segment, typically) from a larger
		// one, which needs a multipart upload.
		var one [1]byte
		n, err := io.ReadFull(src, one[:])
		switch {
		case err == io.EOF:
			eof = true
		case err != nil:
			return 0, err
		default:
			return s.multipart(ctx, key, first, io.MultiReader(bytes.NewReader(one[:n]), src), partSize)
		}
	}
	_, err = s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(s.bucket),
		Key:           aws.String(s.prefix + key),
		Body:          bytes.NewReader(first),
		ContentLength: aws.Int64(int64(len(first))),
	})
	if err != nil {
		return 0, err
	}
	return int64(len(first)), nil
}

// multipart uploads first and the rest of r as a multipart upload. At most
// s.concurrency parts are held in memory (being read or uploaded) at once.
func (s *Store) multipart(ctx context.Context, key string, first []byte, r io.Reader, partSize int64) (sent int64, err error) {
	fullKey := s.prefix + key
	created, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: aws.String(s.bucket),
		Key:    aws.String(fullKey),
	})
	if err != nil {
		return 0, fmt.Errorf("create multipart upload: %w", err)
	}
	uploadID := created.UploadId
	defer func() {
		if err != nil {
			s.abort(ctx, key, uploadID)
		}
	}()

	// Parts are uploaded under a context of their own so that the first
	// failure stops the others (and the reading) at once.
	partCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	var (
		mu       sync.Mutex
		parts    []types.CompletedPart
		firstErr error
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = err
			cancel(err)
		}
	}
	// slots bounds the parts in memory; free recycles their buffers.
	slots := make(chan struct{}, s.concurrency)
	free := make(chan []byte, s.concurrency)

	upload := func(num int32, buf []byte) {
		defer wg.Done()
		defer func() { free <- buf; <-slots }()
		out, err := s.client.UploadPart(partCtx, &s3.UploadPartInput{
			Bucket:        aws.String(s.bucket),
			Key:           aws.String(fullKey),
			UploadId:      uploadID,
			PartNumber:    aws.Int32(num),
			Body:          bytes.NewReader(buf),
			ContentLength: aws.Int64(int64(len(buf))),
		})
		if err != nil {
			fail(fmt.Errorf("upload part %d: %w", num, err))
			return
		}
		mu.Lock()
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num)})
		mu.Unlock()
	}

	slots <- struct{}{}
	wg.Add(1)
	go upload(1, first)
	sent = int64(len(first))
	for num := int32(2); ; num++ {
		select {
		case slots <- struct{}{}:
		case <-partCtx.Done():
		}
		if partCtx.Err() != nil {
			break
		}
		var buf []byte
		select {
		case buf = <-free:
		default:
			buf = make([]byte, 0, partSize)
		}
		buf, eof, err := readPart(r, buf, partSize)
		if err != nil {
			<-slots
			fail(err)
			break
		}
		if len(buf) > 0 {
			if num > maxParts {
				<-slots
				fail(fmt.Errorf("object needs more than %d parts of %d bytes: raise the part size", maxParts, partSize))
				break
			}
			sent += int64(len(buf))
			wg.Add(1)
			go upload(num, buf)
		} else {
			<-slots
		}
		if eof {
			break
		}
	}
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}

	slices.SortFunc(parts, func(a, b types.CompletedPart) int {
		return cmp.Compare(aws.ToInt32(a.PartNumber), aws.ToInt32(b.PartNumber))
	})
	_, err = s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          aws.String(s.bucket),
		Key:             aws.String(fullKey),
		UploadId:        uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		return 0, fmt.Errorf("complete multipart upload of %d parts: %w", len(parts), err)
	}
	return sent, nil
}

// abort removes a failed multipart upload's parts. It must run even when ctx
// is cancelled (that is often why the upload failed).
func (s *Store) abort(ctx context.Context, key string, uploadID *string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	_, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket:   aws.String(s.bucket),
		Key:      aws.String(s.prefix + key),
		UploadId: uploadID,
	})
	if err != nil {
		// The parts are invisible but billed until a lifecycle rule or a
		// later abort removes them: worth a warning, not a failed Put
		// (which has failed already).
		s.log.WarnContext(ctx, "could not abort multipart upload",
			"object", s.objectURL(key), "upload_id", aws.ToString(uploadID), "error", err)
	}
}

// verify checks the stored object's size against the bytes sent and deletes
// the object if they differ: a truncated backup must not look complete. The
// object is already visible, so this runs to the end even if ctx is cancelled.
func (s *Store) verify(ctx context.Context, key string, sent int64) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket: aws.String(s.bucket),
		Key:    aws.String(s.prefix + key),
	})
	if err != nil {
		return fmt.Errorf("verify uploaded object: %w", err)
	}
	if got := aws.ToInt64(out.ContentLength); got != sent {
		_, derr := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{
			Bucket: aws.String(s.bucket),
			Key:    aws.String(s.prefix + key),
		})
		return errors.Join(
			fmt.Errorf("verify uploaded object: stored size %d differs from the %d bytes sent", got, sent),
			derr)
	}
	return nil
}

// readPart reads from r until limit bytes are in buf or r is exhausted,
// reusing buf's capacity and otherwise growing it geometrically, so a small
// object does not cost a whole part's memory. eof reports that r ended.
func readPart(r io.Reader, buf []byte, limit int64) (_ []byte, eof bool, _ error) {
	buf = buf[:0]
	for int64(len(buf)) < limit {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(limit, max(2*int64(cap(buf)), 64<<10)))
			copy(nb, buf)
			buf = nb
		}
		n, err := r.Read(buf[len(buf):min(int64(cap(buf)), limit)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, true, nil
		}
		if err != nil {
			return buf, false, err
		}
	}
	return buf, false, nil
}
