variable "regions" {
  description = "The three AWS regions of the deployment, one bucket in each (coordinators and PostgreSQL nodes spread over the same three)."
  type        = list(string)

  validation {
    condition     = length(var.regions) == 3 && length(distinct(var.regions)) == 3
    error_message = "regions must name three different AWS regions."
  }
}

variable "bucket_name_prefix" {
  description = "Bucket names are \"<bucket_name_prefix>-<region>\" (and \"<bucket_name_prefix>-<region>-monthly\" for the object-locked monthly bucket). S3 bucket names are global: make it unique, e.g. with the account ID."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,30}[a-z0-9]$", var.bucket_name_prefix))
    error_message = "bucket_name_prefix must be 3 to 32 lower-case letters, digits or '-', not starting or ending with '-'."
  }
}

variable "prefix" {
  description = "The repository prefix inside each bucket (repos[].url is s3://BUCKET/PREFIX; objects go under PREFIX/<cluster>/)."
  type        = string
  default     = "pgdr"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_-]*$", var.prefix))
    error_message = "prefix must be lower-case letters, digits, '_' or '-'."
  }
}

variable "archive_prefix" {
  description = "The prefix of the long-retention repository in each bucket (repos[] name archive-<region>): give it the long-retention tiers (weekly, monthly) in the backup policy; the lifecycle moves it to colder storage classes."
  type        = string
  default     = "pgdr-archive"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_-]*$", var.archive_prefix))
    error_message = "archive_prefix must be lower-case letters, digits, '_' or '-'."
  }
}

variable "clusters" {
  description = "The pgdr clusters (the agent configuration's cluster) that write to the buckets: each gets an agent role and an expiry role limited to its own prefixes."
  type        = list(string)

  validation {
    condition     = length(var.clusters) > 0 && alltrue([for c in var.clusters : can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]*$", c))])
    error_message = "clusters must list at least one cluster name (letters, digits, '_', '.', '-')."
  }
}

variable "archive_transitions" {
  description = "Lifecycle transitions of the long-retention repository (archive_prefix and the monthly bucket), oldest last. pgdr reads objects directly (restore, drill, verify): only classes readable without a restore request work (STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING, GLACIER_IR), never GLACIER or DEEP_ARCHIVE."
  type = list(object({
    days          = number
    storage_class = string
  }))
  default = [
    { days = 30, storage_class = "STANDARD_IA" },
    { days = 90, storage_class = "GLACIER_IR" },
  ]

  validation {
    condition     = alltrue([for t in var.archive_transitions : contains(["STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR"], t.storage_class)])
    error_message = "archive_transitions: storage_class must be STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING or GLACIER_IR (pgdr cannot read GLACIER or DEEP_ARCHIVE objects without a restore request)."
  }
}

variable "noncurrent_version_days" {
  description = "Days a replaced or deleted object's previous version is kept (versioning makes an expiry or an overwrite recoverable for this long)."
  type        = number
  default     = 30
}

variable "monthly_object_lock" {
  description = "Optional S3 Object Lock for the monthly tier: a second bucket per region (repos[] name monthly-<region>) whose objects cannot be deleted or overwritten for retention_days. mode GOVERNANCE can be bypassed with s3:BypassGovernanceRetention, COMPLIANCE by nobody. retention_days should cover the monthly tier's keep_age."
  type = object({
    enabled        = bool
    mode           = optional(string, "GOVERNANCE")
    retention_days = optional(number, 400)
  })
  default = { enabled = false }

  validation {
    condition     = contains(["GOVERNANCE", "COMPLIANCE"], var.monthly_object_lock.mode) && var.monthly_object_lock.retention_days > 0
    error_message = "monthly_object_lock: mode must be GOVERNANCE or COMPLIANCE and retention_days positive."
  }
}

variable "kms_key_arns" {
  description = "Optional KMS key ARN per region for default encryption (aws:kms); regions not listed use SSE-S3 (AES256)."
  type        = map(string)
  default     = {}
}

variable "agent_trusted_principals" {
  description = "IAM principal ARNs allowed to assume the agent and expiry roles (e.g. the PostgreSQL hosts' instance roles, or an EKS pod identity role). Empty: EC2 instances (ec2.amazonaws.com) may assume them, for instance profiles."
  type        = list(string)
  default     = []
}

variable "role_name_prefix" {
  description = "IAM role names are \"<role_name_prefix>-agent-<cluster>\" and \"<role_name_prefix>-expiry-<cluster>\"."
  type        = string
  default     = "pgdr"
}

variable "force_destroy" {
  description = "Let terraform destroy non-empty buckets (never for production backups)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
