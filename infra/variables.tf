variable "project_id" {
  description = "The Google Cloud project to deploy into."
  type        = string
}

variable "region" {
  description = "Region for the buckets, the functions, Batch jobs and the image repository (L4 GPUs must be offered there)."
  type        = string
  default     = "us-central1"
}

variable "inbox_bucket" {
  description = "Name of the inbox bucket users upload videos and manifests to (globally unique)."
  type        = string
}

variable "models_bucket" {
  description = "Name of the bucket holding model files listed in processors/models/catalog.yaml."
  type        = string
}

variable "firestore_database" {
  description = "Firestore database for job status; \"(default)\" or a named database."
  type        = string
  default     = "(default)"
}

variable "firestore_location" {
  description = "Firestore location (a region or multi-region such as nam5)."
  type        = string
  default     = "nam5"
}

variable "image_digest" {
  description = "Digest (sha256:…) of the task image pushed to the dropbatch repository (README, deploy step 4). Every task of a job runs exactly this image; null until the first push (the functions refuse to deploy without it)."
  type        = string
  default     = null
  validation {
    condition     = var.image_digest == null || can(regex("^sha256:[0-9a-f]{64}$", var.image_digest))
    error_message = "image_digest must be sha256: followed by 64 hex digits (docker push prints it)."
  }
}

variable "image_variant" {
  description = "The Dockerfile.gpu target image_digest was built from: slim (onnxruntime only, the default) or ultralytics (adds torch and ultralytics for crop's `detector: yolo`, which the trigger refuses on slim)."
  type        = string
  default     = "slim"
  validation {
    condition     = contains(["slim", "ultralytics"], var.image_variant)
    error_message = "image_variant must be slim or ultralytics (the Dockerfile.gpu target you pushed)."
  }
}

variable "boot_image" {
  description = "Boot image of the Batch VMs: batch-debian (Batch installs the NVIDIA driver at each VM start), or an image with the driver installed (set gpu_driver_preinstalled = true); docs/decisions/0089-boot-image-with-driver-optional.md."
  type        = string
  default     = "batch-debian"
}

variable "gpu_driver_preinstalled" {
  description = "boot_image already has the NVIDIA driver (R570 or newer) and the NVIDIA Container Toolkit (infra/boot-image/ bakes both), so Batch installs no driver and the container asks for the GPU itself."
  type        = bool
  default     = false
}

variable "boot_image_task_image" {
  description = "The task image (repository@sha256:…) boot_image was built with (infra/boot-image/ pulls it onto the image); while it is the deployed image, the planner and `dropbatch cost` count no pull at VM start. Empty: none."
  type        = string
  default     = ""
}

variable "chain_fps" {
  description = "Your chains' speed on one GPU in frames per second (each task logs its chunks' fps), overriding each job's own from the step-cost table (processors/step_costs.yaml); 0: the table's. With vm_startup_seconds, what compute.workers: auto sizes a job's workers by (README, \"How many workers\")."
  type        = number
  default     = 0

  validation {
    condition     = var.chain_fps >= 0
    error_message = "chain_fps must be 0 (from the step-cost table) or a positive number of frames per second."
  }
}

variable "vm_startup_seconds" {
  description = "A Batch VM's start-up before its worker starts (boot, driver install, image pull); 0: from the boot image, 250 s on batch-debian, 100 s with gpu_driver_preinstalled, 40 s when boot_image_task_image is also the deployed image."
  type        = number
  default     = 0

  validation {
    condition     = var.vm_startup_seconds >= 0
    error_message = "vm_startup_seconds must be 0 or more."
  }
}

variable "function_source_dir" {
  description = "Folder written by `python -m dropbatch.build_function`."
  type        = string
  default     = "../build/function"
}

variable "batch_allowed_locations" {
  description = "Where Batch may place task VMs, e.g. [\"zones/us-central1-a\"]; empty: anywhere in the region."
  type        = list(string)
  default     = []
}

variable "work_bucket" {
  description = "Name of the bucket for internal objects (chunk parts, preview tiles, output-name claims); null: \"<inbox_bucket>-work\"."
  type        = string
  default     = null
}

variable "leftover_parts_days" {
  description = "Delete chunk parts and preview tiles a job left in the work bucket after this many days."
  type        = number
  default     = 3
}

variable "sweep_schedule" {
  description = "Cron schedule (Cloud Scheduler) of the sweep that ends expired waiting manifests."
  type        = string
  default     = "*/5 * * * *"
}

variable "operators" {
  description = "Members (\"user:you@example.com\", \"group:…\") who run `dropbatch doctor`: its self-check job names the notification topic, so each gets roles/pubsub.editor on that topic (they also need roles/batch.jobsEditor and to act as the job account, granted outside this configuration)."
  type        = list(string)
  default     = []
}

variable "trigger_deadline_seconds" {
  description = "Planning one event's manifests ends by then (FAILED PLANNING_TIMEOUT naming the inputs not yet probed), at least 30 s under the inbox function's 540 s timeout."
  type        = number
  default     = 480

  validation {
    condition     = var.trigger_deadline_seconds > 0
    error_message = "trigger_deadline_seconds must be a positive number of seconds."
  }
}

variable "queued_timeout_minutes" {
  description = "A Batch job not started after this long (no GPU quota or capacity, an image that cannot be pulled) is deleted and ends FAILED NO_CAPACITY with Batch's reason."
  type        = number
  default     = 60

  validation {
    condition     = var.queued_timeout_minutes > 0
    error_message = "queued_timeout_minutes must be a positive number of minutes."
  }
}

variable "warm_minutes" {
  description = "Warm pool: a worker whose job has no chunk left stays up this long, models loaded, taking chunks of any job on the same image and machine kind; the trigger launches VMs only for what free workers do not cover. 0: every job on Batch jobs of its own."
  type        = number
  default     = 5

  validation {
    condition     = var.warm_minutes >= 0
    error_message = "warm_minutes must be 0 (no pool) or a positive number of minutes."
  }
}

variable "pool_max_workers" {
  description = "At most this many warm-pool workers (one VM each) live at once in the deployment."
  type        = number
  default     = 20

  validation {
    condition     = var.pool_max_workers >= 1
    error_message = "pool_max_workers must be at least 1."
  }
}
