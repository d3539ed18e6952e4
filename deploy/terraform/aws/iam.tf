# IAM for the agents, one pair of roles per cluster. Coordinators get
# nothing: they never touch the repositories.
#
#   <role_name_prefix>-agent-<cluster>: archive WAL, take backups, read for
#     restores, drills and verification (pgdr-agent run, wal-push, wal-fetch,
#     backup, restore, drill, backup-verify) under its cluster's prefixes
#     only. No deletion of WAL or backups: its only deletes are pgdr's own
#     markers, the repository probe (.pgdr-probe-*, written and removed by
#     `pgdr-agent config check`) and backup-ID reservations
#     (<cluster>/backup/<stamp>.reserved/). A failed backup's leftovers stay
#     until the expiry removes them.
#   <role_name_prefix>-expiry-<cluster>: the same plus s3:DeleteObject under
#     the cluster's prefixes: for `pgdr-agent expire`, backup-unpin and
#     wal-repair. Never s3:DeleteObjectVersion nor
#     s3:BypassGovernanceRetention: with versioning a deletion leaves the
#     previous version for noncurrent_version_days, and the monthly bucket's
#     Object Lock holds.

locals {
  # Every repository root: the hot repository and the long-retention one in
  # each main bucket, and the monthly bucket's.
  repo_roots = flatten([
    for region, b in local.buckets : concat(
      [
        { bucket_arn = b.bucket_arn, prefix = var.prefix },
        { bucket_arn = b.bucket_arn, prefix = var.archive_prefix },
      ],
      var.monthly_object_lock.enabled ? [{ bucket_arn = b.monthly_bucket_arn, prefix = var.prefix }] : []
    )
  ])
  bucket_arns = distinct([for r in local.repo_roots : r.bucket_arn])
  kms_keys    = [for region in var.regions : var.kms_key_arns[region] if contains(keys(var.kms_key_arns), region)]
}

data "aws_iam_policy_document" "assume" {
  statement {
    sid     = "AssumeByAgents"
    actions = ["sts:AssumeRole"]

    dynamic "principals" {
      for_each = length(var.agent_trusted_principals) == 0 ? ["Service"] : []
      content {
        type        = "Service"
        identifiers = ["ec2.amazonaws.com"]
      }
    }

    dynamic "principals" {
      for_each = length(var.agent_trusted_principals) > 0 ? ["AWS"] : []
      content {
        type        = "AWS"
        identifiers = var.agent_trusted_principals
      }
    }
  }
}

# The agent: read and write its cluster's prefixes, delete nothing but its
# own markers.
data "aws_iam_policy_document" "agent" {
  for_each = toset(var.clusters)

  statement {
    sid       = "ListClusterPrefixes"
    actions   = ["s3:ListBucket"]
    resources = local.bucket_arns
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      # With the slash: "pgdr/main" would also list pgdr/main2/'s keys.
      values = [for p in distinct([var.prefix, var.archive_prefix]) : "${p}/${each.key}/*"]
    }
  }

  statement {
    sid       = "BucketLocation"
    actions   = ["s3:GetBucketLocation"]
    resources = local.bucket_arns
  }

  statement {
    sid = "ReadWriteClusterObjects"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = [for r in local.repo_roots : "${r.bucket_arn}/${r.prefix}/${each.key}/*"]
  }

  statement {
    sid       = "RepositoryProbe"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = [for r in local.repo_roots : "${r.bucket_arn}/${r.prefix}/.pgdr-probe-*"]
  }

  statement {
    sid       = "BackupReservations"
    actions   = ["s3:DeleteObject"]
    resources = [for r in local.repo_roots : "${r.bucket_arn}/${r.prefix}/${each.key}/backup/*.reserved/*"]
  }

  dynamic "statement" {
    for_each = length(local.kms_keys) > 0 ? ["kms"] : []
    content {
      sid       = "EncryptionKeys"
      actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
      resources = local.kms_keys
    }
  }
}

# The expiry: the agent's rights plus deletion under its cluster's prefixes.
data "aws_iam_policy_document" "expiry" {
  for_each = toset(var.clusters)

  source_policy_documents = [data.aws_iam_policy_document.agent[each.key].json]

  statement {
    sid       = "ExpireClusterObjects"
    actions   = ["s3:DeleteObject"]
    resources = [for r in local.repo_roots : "${r.bucket_arn}/${r.prefix}/${each.key}/*"]
  }
}

resource "aws_iam_role" "agent" {
  for_each = toset(var.clusters)

  name                 = "${var.role_name_prefix}-agent-${each.key}"
  description          = "pgdr agents of cluster ${each.key}: read and write its repository prefixes, no deletion of WAL or backups"
  assume_role_policy   = data.aws_iam_policy_document.assume.json
  max_session_duration = 3600
  tags                 = var.tags
}

resource "aws_iam_role_policy" "agent" {
  for_each = toset(var.clusters)

  name   = "pgdr-repositories"
  role   = aws_iam_role.agent[each.key].id
  policy = data.aws_iam_policy_document.agent[each.key].json
}

resource "aws_iam_role" "expiry" {
  for_each = toset(var.clusters)

  name                 = "${var.role_name_prefix}-expiry-${each.key}"
  description          = "pgdr expiry of cluster ${each.key}: the agent's rights plus deletion under its repository prefixes"
  assume_role_policy   = data.aws_iam_policy_document.assume.json
  max_session_duration = 3600
  tags                 = var.tags
}

resource "aws_iam_role_policy" "expiry" {
  for_each = toset(var.clusters)

  name   = "pgdr-repositories-expiry"
  role   = aws_iam_role.expiry[each.key].id
  policy = data.aws_iam_policy_document.expiry[each.key].json
}

resource "aws_iam_instance_profile" "agent" {
  for_each = length(var.agent_trusted_principals) == 0 ? toset(var.clusters) : toset([])

  name = "${var.role_name_prefix}-agent-${each.key}"
  role = aws_iam_role.agent[each.key].name
  tags = var.tags
}
