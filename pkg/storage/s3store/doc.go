// Package s3store implements storage.ObjectStore on Amazon S3 and
// S3-compatible servers (MinIO, versitygw, Ceph RGW, ...) for
// s3://bucket/prefix repositories, using aws-sdk-go-v2.
//
// Put streams: objects up to one part are sent with a single PutObject,
// larger ones (or ones whose size is unknown and turns out large) with a
// multipart upload whose parts are uploaded Concurrency at a time, so memory
// stays bounded by PartSize*Concurrency per Put whatever the object's size.
// A failed or cancelled Put aborts its multipart upload, so nothing becomes
// visible; a completed one is checked with HeadObject against the number of
// bytes sent.
//
// Every request goes through the SDK's standard retryer (exponential backoff
// with jitter on throttling such as 503 SlowDown and 429, on 5xx and on
// connection errors), limited to Options.MaxAttempts attempts and without the
// SDK's client-side retry quota, which would otherwise turn a long outage
// into immediate failures for a busy archiver.
//
// Checksums are only computed and validated when an operation requires them:
// the SDK's newer default (CRC trailers on every request) is not understood
// by every S3-compatible server. Integrity of uploads still rests on the
// SigV4 payload hash and the size check.
package s3store
