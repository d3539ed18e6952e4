package s3store

import (
	"errors"
	"net"
	"strings"

	"github.com/aws/smithy-go"
)

// Explain says in plain words what an error from this store means for the
// operator (the bucket is missing, the key is refused, the endpoint does not
// answer), or returns "" when it has nothing to add to the error itself.
func (s *Store) Explain(err error) string {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "NoSuchBucket":
			return "bucket " + s.bucket + " does not exist" + s.at() + "; create it first (aws s3 mb s3://" + s.bucket + ", or your S3 server's own tool)"
		case "InvalidAccessKeyId":
			return "the access key id is not known" + s.at() + ": check AWS_ACCESS_KEY_ID or s3.access_key_id_file"
		case "SignatureDoesNotMatch":
			return "the secret access key is wrong for this access key id" + s.at() + ": check AWS_SECRET_ACCESS_KEY or s3.secret_access_key_file"
		case "AccessDenied", "Forbidden":
			return "access denied to s3://" + s.bucket + "/" + s.prefix + s.at() + ": the credentials need s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject there"
		case "PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException":
			return "the bucket is in another region than s3.region says: " + apiErr.ErrorMessage()
		}
	}
	var opErr *net.OpError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr):
		return "the S3 endpoint's host name does not resolve (" + dnsErr.Name + "): check s3.endpoint"
	case errors.As(err, &opErr) && strings.Contains(opErr.Err.Error(), "connection refused"):
		return "nothing answers at the S3 endpoint" + s.at() + " (connection refused): check s3.endpoint and that the server runs"
	}
	return ""
}

func (s *Store) at() string {
	if s.endpoint == "" {
		return ""
	}
	return " at " + s.endpoint
}
