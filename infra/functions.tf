data "archive_file" "function_source" {
  type        = "zip"
  source_dir  = var.function_source_dir
  output_path = "${path.module}/.build/function.zip"
}

resource "google_storage_bucket_object" "function_source" {
  # Content-addressed, so a changed build redeploys both functions.
  name   = "function-${data.archive_file.function_source.output_md5}.zip"
  bucket = google_storage_bucket.function_source.name
  source = data.archive_file.function_source.output_path
}

locals {
  repository = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}/task"
  # By digest: a tag moved mid-job would run one job's tasks on different images.
  image = var.image_digest == null ? "" : "${local.repository}@${var.image_digest}"
  # Settings (core/config.py); the trigger passes them on to every Batch task.
  function_env = merge({
    DROPBATCH_STORAGE                 = "gcs"
    DROPBATCH_WORK_BUCKET             = google_storage_bucket.work.name
    DROPBATCH_STATUS                  = "firestore"
    DROPBATCH_FIRESTORE_DATABASE      = var.firestore_database
    DROPBATCH_LAUNCHER                = "batch"
    DROPBATCH_PROJECT                 = var.project_id
    DROPBATCH_REGION                  = var.region
    DROPBATCH_IMAGE                   = local.image
    DROPBATCH_IMAGE_VARIANT           = var.image_variant
    DROPBATCH_BOOT_IMAGE              = var.boot_image
    DROPBATCH_GPU_DRIVER_PREINSTALLED = tostring(var.gpu_driver_preinstalled)
    DROPBATCH_BOOT_IMAGE_TASK_IMAGE   = var.boot_image_task_image
    DROPBATCH_CHAIN_FPS               = tostring(var.chain_fps)
    DROPBATCH_VM_STARTUP_SECONDS      = tostring(var.vm_startup_seconds)
    DROPBATCH_JOB_SERVICE_ACCOUNT     = google_service_account.job.email
    DROPBATCH_NOTIFICATION_TOPIC      = google_pubsub_topic.batch_state.id
    DROPBATCH_MODEL_STORE             = "gs://${google_storage_bucket.models.name}/"
    DROPBATCH_ALLOWED_LOCATIONS       = join(",", var.batch_allowed_locations)
    }, {
    # Deadlines: planning must end inside the inbox function's timeout; a job Batch never
    # starts ends instead of waiting forever.
    DROPBATCH_TRIGGER_DEADLINE_SECONDS = tostring(var.trigger_deadline_seconds)
    DROPBATCH_QUEUED_TIMEOUT_MINUTES   = tostring(var.queued_timeout_minutes)
    }, {
    # The warm pool (docs/decisions/0119-warm-pool-of-workers.md): workers stay up this long
    # after their job and take other jobs' chunks; Batch jobs are capacity for the shortfall.
    DROPBATCH_WARM_MINUTES     = tostring(var.warm_minutes)
    DROPBATCH_POOL_MAX_WORKERS = tostring(var.pool_max_workers)
  })
  # The inbox trigger is stopped at this (the most an event-driven function gets); planning
  # must end before it, with time left to record why (trigger_deadline_seconds).
  inbox_function_timeout = 540
}

resource "google_cloudfunctions2_function" "on_inbox_object" {
  name     = "dropbatch-on-inbox-object"
  location = var.region

  build_config {
    runtime         = "python311"
    entry_point     = "on_inbox_object"
    service_account = google_service_account.builder.id
    source {
      storage_source {
        bucket = google_storage_bucket.function_source.name
        object = google_storage_bucket_object.function_source.name
      }
    }
  }

  service_config {
    service_account_email = google_service_account.function.email
    available_memory      = "1Gi"
    timeout_seconds       = local.inbox_function_timeout
    max_instance_count    = 20
    environment_variables = local.function_env
  }

  # Every finalized object in the inbox; the function routes (and ignores its own writes).
  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.storage.object.v1.finalized"
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.function.email
    event_filters {
      attribute = "bucket"
      value     = google_storage_bucket.inbox.name
    }
  }

  lifecycle {
    precondition {
      condition     = var.image_digest != null
      error_message = "Set image_digest to the pushed task image's digest (README, deploy step 4)."
    }
    precondition {
      # A planning cut short at the deadline still needs a few seconds to record FAILED.
      condition     = var.trigger_deadline_seconds + 30 <= local.inbox_function_timeout
      error_message = "trigger_deadline_seconds must be at least 30 s under the inbox function's 540 s timeout."
    }
  }

  depends_on = [
    google_project_service.apis,
    time_sleep.builder_roles_propagate,
    google_project_iam_member.function_invokes_functions,
    google_project_iam_member.function_event_receiver,
    google_project_iam_member.storage_agent_publishes,
  ]
}

resource "google_cloudfunctions2_function" "on_batch_state" {
  name     = "dropbatch-on-batch-state"
  location = var.region

  build_config {
    runtime         = "python311"
    entry_point     = "on_batch_state"
    service_account = google_service_account.builder.id
    source {
      storage_source {
        bucket = google_storage_bucket.function_source.name
        object = google_storage_bucket_object.function_source.name
      }
    }
  }

  service_config {
    service_account_email = google_service_account.function.email
    available_memory      = "512Mi"
    timeout_seconds       = 120
    environment_variables = local.function_env
  }

  # Cloud Batch job-state notifications (the Job's notification names this topic).
  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
    pubsub_topic          = google_pubsub_topic.batch_state.id
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.function.email
  }

  depends_on = [
    google_project_service.apis,
    time_sleep.builder_roles_propagate,
    google_project_iam_member.function_invokes_functions,
    google_project_iam_member.function_event_receiver,
  ]
}

resource "google_cloudfunctions2_function" "on_sweep" {
  name     = "dropbatch-on-sweep"
  location = var.region

  build_config {
    runtime         = "python311"
    entry_point     = "on_sweep"
    service_account = google_service_account.builder.id
    source {
      storage_source {
        bucket = google_storage_bucket.function_source.name
        object = google_storage_bucket_object.function_source.name
      }
    }
  }

  service_config {
    service_account_email = google_service_account.function.email
    available_memory      = "512Mi"
    timeout_seconds       = 300
    max_instance_count    = 1 # one sweep at a time; the next tick catches up
    environment_variables = local.function_env
  }

  # Cloud Scheduler's tick; no retries: the next tick sweeps again.
  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
    pubsub_topic          = google_pubsub_topic.sweep.id
    retry_policy          = "RETRY_POLICY_DO_NOT_RETRY"
    service_account_email = google_service_account.function.email
  }

  depends_on = [
    google_project_service.apis,
    time_sleep.builder_roles_propagate,
    google_project_iam_member.function_invokes_functions,
    google_project_iam_member.function_event_receiver,
  ]
}
