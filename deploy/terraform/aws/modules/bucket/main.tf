# A region's pgdr buckets: "main" (the hot repository and the long-retention
# prefix) always, "monthly" (Object Lock) when enabled. Every bucket is
# versioned, encrypted by default, closed to the public, owner-enforced
# and reachable over TLS only.

data "aws_partition" "current" {}

locals {
  buckets = merge(
    {
      main = {
        name = var.name
        lock = false
        # Only the long-retention prefix goes cold: WAL and the frequent
        # tiers are read by restores and drills and expire quickly.
        cold_prefix = "${var.archive_prefix}/"
      }
    },
    var.monthly_object_lock.enabled ? {
      monthly = {
        name        = "${var.name}-monthly"
        lock        = true
        cold_prefix = ""
      }
    } : {}
  )
}

resource "aws_s3_bucket" "this" {
  for_each = local.buckets

  bucket              = each.value.name
  force_destroy       = var.force_destroy
  object_lock_enabled = each.value.lock
  tags                = merge(var.tags, { "pgdr:bucket" = each.key })
}

resource "aws_s3_bucket_versioning" "this" {
  for_each = local.buckets

  bucket = aws_s3_bucket.this[each.key].id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  for_each = local.buckets

  bucket = aws_s3_bucket.this[each.key].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  for_each = local.buckets

  bucket                  = aws_s3_bucket.this[each.key].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  for_each = local.buckets

  bucket = aws_s3_bucket.this[each.key].id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

data "aws_iam_policy_document" "tls_only" {
  for_each = local.buckets

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.this[each.key].arn,
      "${aws_s3_bucket.this[each.key].arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  for_each = local.buckets

  bucket     = aws_s3_bucket.this[each.key].id
  policy     = data.aws_iam_policy_document.tls_only[each.key].json
  depends_on = [aws_s3_bucket_public_access_block.this]
}

resource "aws_s3_bucket_object_lock_configuration" "monthly" {
  for_each = { for k, b in local.buckets : k => b if b.lock }

  bucket = aws_s3_bucket.this[each.key].id
  rule {
    default_retention {
      mode = var.monthly_object_lock.mode
      days = var.monthly_object_lock.retention_days
    }
  }
  depends_on = [aws_s3_bucket_versioning.this]
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  for_each = local.buckets

  bucket = aws_s3_bucket.this[each.key].id

  # pgdr's expiry deletes objects; versioning keeps what it deleted, and a
  # replaced object, this long.
  rule {
    id     = "noncurrent-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
    expiration {
      expired_object_delete_marker = true
    }
  }

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  # The long-retention tiers: colder storage classes as they age (the whole
  # monthly bucket; the archive prefix of the main bucket).
  rule {
    id     = "long-retention-tiers"
    status = "Enabled"
    filter {
      prefix = each.value.cold_prefix
    }
    dynamic "transition" {
      for_each = var.archive_transitions
      content {
        days          = transition.value.days
        storage_class = transition.value.storage_class
      }
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}
