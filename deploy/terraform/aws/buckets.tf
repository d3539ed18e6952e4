# One bucket per region (and, with monthly_object_lock, one object-locked
# bucket per region for the monthly tier), each made by its region's
# provider.

module "bucket_r1" {
  source    = "./modules/bucket"
  providers = { aws = aws.r1 }

  name                    = "${var.bucket_name_prefix}-${var.regions[0]}"
  archive_prefix          = var.archive_prefix
  archive_transitions     = var.archive_transitions
  noncurrent_version_days = var.noncurrent_version_days
  monthly_object_lock     = var.monthly_object_lock
  kms_key_arn             = lookup(var.kms_key_arns, var.regions[0], null)
  force_destroy           = var.force_destroy
  tags                    = var.tags
}

module "bucket_r2" {
  source    = "./modules/bucket"
  providers = { aws = aws.r2 }

  name                    = "${var.bucket_name_prefix}-${var.regions[1]}"
  archive_prefix          = var.archive_prefix
  archive_transitions     = var.archive_transitions
  noncurrent_version_days = var.noncurrent_version_days
  monthly_object_lock     = var.monthly_object_lock
  kms_key_arn             = lookup(var.kms_key_arns, var.regions[1], null)
  force_destroy           = var.force_destroy
  tags                    = var.tags
}

module "bucket_r3" {
  source    = "./modules/bucket"
  providers = { aws = aws.r3 }

  name                    = "${var.bucket_name_prefix}-${var.regions[2]}"
  archive_prefix          = var.archive_prefix
  archive_transitions     = var.archive_transitions
  noncurrent_version_days = var.noncurrent_version_days
  monthly_object_lock     = var.monthly_object_lock
  kms_key_arn             = lookup(var.kms_key_arns, var.regions[2], null)
  force_destroy           = var.force_destroy
  tags                    = var.tags
}

locals {
  # region => the bucket module's outputs, in the order of var.regions.
  buckets = {
    (var.regions[0]) = module.bucket_r1
    (var.regions[1]) = module.bucket_r2
    (var.regions[2]) = module.bucket_r3
  }
}
