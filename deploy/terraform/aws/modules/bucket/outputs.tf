output "bucket" {
  description = "The main bucket's name."
  value       = aws_s3_bucket.this["main"].id
}

output "bucket_arn" {
  description = "The main bucket's ARN."
  value       = aws_s3_bucket.this["main"].arn
}

output "monthly_bucket" {
  description = "The object-locked monthly bucket's name (null when monthly_object_lock is disabled)."
  value       = try(aws_s3_bucket.this["monthly"].id, null)
}

output "monthly_bucket_arn" {
  description = "The object-locked monthly bucket's ARN (null when disabled)."
  value       = try(aws_s3_bucket.this["monthly"].arn, null)
}
