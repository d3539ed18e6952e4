# One provider configuration per region (aliases r1, r2, r3): each region's
# bucket is created by its own provider. IAM is global and uses the default
# provider, in the first region.

provider "aws" {
  region = var.regions[0]
}

provider "aws" {
  alias  = "r1"
  region = var.regions[0]
}

provider "aws" {
  alias  = "r2"
  region = var.regions[1]
}

provider "aws" {
  alias  = "r3"
  region = var.regions[2]
}
