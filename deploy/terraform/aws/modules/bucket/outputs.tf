output "bucket" {
  description = "The main bucket's name."
  value       = aws_s3_bucket.this["main"].bucket
}

# Names and ARNs are derived from the configured names (known at plan time,
# so that `terraform plan` shows the IAM policies and repos_yaml in full);
# depends_on keeps them after the buckets' creation.
output "bucket_arn" {
  description = "The main bucket's ARN."
  value       = "arn:${data.aws_partition.current.partition}:s3:::${aws_s3_bucket.this["main"].bucket}"
  depends_on  = [aws_s3_bucket.this]
}

output "monthly_bucket" {
  description = "The object-locked monthly bucket's name (null when monthly_object_lock is disabled)."
  value       = try(aws_s3_bucket.this["monthly"].bucket, null)
}

output "monthly_bucket_arn" {
  description = "The object-locked monthly bucket's ARN (null when disabled)."
  value       = var.monthly_object_lock.enabled ? "arn:${data.aws_partition.current.partition}:s3:::${aws_s3_bucket.this["monthly"].bucket}" : null
  depends_on  = [aws_s3_bucket.this]
}
