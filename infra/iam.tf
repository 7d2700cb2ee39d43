# Three identities, each with only what its work needs (README, deploy). Service accounts
# are created through the IAM API, so they wait for it.

resource "google_service_account" "function" {
  account_id   = "dropbatch-function"
  display_name = "dropbatch trigger, reconcile and sweep functions"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "job" {
  account_id   = "dropbatch-job"
  display_name = "dropbatch Batch task VMs"
  depends_on   = [google_project_service.apis]
}

# Cloud Build runs the functions' builds as this account, not as a project default that
# newer projects no longer grant build permissions to (the provider's
# cloudfunctions2_function example with build_config.service_account, same three roles).
resource "google_service_account" "builder" {
  account_id   = "dropbatch-builder"
  display_name = "dropbatch function builds (Cloud Build)"
  depends_on   = [google_project_service.apis]
}

locals {
  function_member = "serviceAccount:${google_service_account.function.email}"
  job_member      = "serviceAccount:${google_service_account.job.email}"
  builder_member  = "serviceAccount:${google_service_account.builder.email}"
}

# --- function: read the inbox, write status files, create Batch jobs as the job account ---

resource "google_storage_bucket_iam_member" "function_reads_inbox" {
  bucket = google_storage_bucket.inbox.name
  role   = "roles/storage.objectViewer"
  member = local.function_member
}

# Writing (and replacing) objects, but only `*.status.json` ones.
resource "google_storage_bucket_iam_member" "function_writes_status_files" {
  bucket = google_storage_bucket.inbox.name
  role   = "roles/storage.objectUser"
  member = local.function_member
  condition {
    title      = "status-files-only"
    expression = "resource.name.endsWith(\".status.json\")"
  }
}

# The trigger claims output names in the work bucket (create-only writes, read back, replaced
# with a precondition, deleted when refused) and touches nothing else there.
resource "google_storage_bucket_iam_member" "function_claims_outputs" {
  bucket = google_storage_bucket.work.name
  role   = "roles/storage.objectUser"
  member = local.function_member
  condition {
    title      = "output-claims-only"
    expression = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.work.name}/objects/${var.inbox_bucket}/outputs/\")"
  }
}

# The model store is checked at trigger time: a missing model is a validation error.
resource "google_storage_bucket_iam_member" "function_reads_models" {
  bucket = google_storage_bucket.models.name
  role   = "roles/storage.objectViewer"
  member = local.function_member
}

resource "google_project_iam_member" "function_creates_batch_jobs" {
  project = var.project_id
  role    = "roles/batch.jobsEditor"
  member  = local.function_member
}

resource "google_service_account_iam_member" "function_acts_as_job_account" {
  service_account_id = google_service_account.job.name
  role               = "roles/iam.serviceAccountUser"
  member             = local.function_member
}

resource "google_project_iam_member" "function_firestore_user" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = local.function_member
}

resource "google_project_iam_member" "function_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = local.function_member
}

# Eventarc delivers events with the trigger's identity: it must receive and invoke.
resource "google_project_iam_member" "function_event_receiver" {
  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = local.function_member
}

# Granted on the project, before the functions exist: each function's Cloud Run service (the
# only narrower scope, and Cloud Run takes no IAM conditions) is created with the function and
# its Eventarc trigger, so a service-level grant lands after events already arrive.
resource "google_project_iam_member" "function_invokes_functions" {
  project    = var.project_id
  role       = "roles/run.invoker"
  member     = local.function_member
  depends_on = [google_project_service.apis]
}

# The trigger creates Batch jobs that publish state notifications to the topic. Batch's
# "enable notifications" page (https://cloud.google.com/batch/docs/enable-notifications,
# "Required roles") asks Pub/Sub Editor (roles/pubsub.editor) of whoever creates a job with
# notifications: granted on this one topic, not on the project.
resource "google_pubsub_topic_iam_member" "function_edits_batch_state" {
  topic  = google_pubsub_topic.batch_state.id
  role   = "roles/pubsub.editor"
  member = local.function_member
}

# The people who run `dropbatch doctor` create its self-check job, which names this topic too
# (README, deploy step 7): the same role on the same topic, for each listed member.
resource "google_pubsub_topic_iam_member" "operators_edit_batch_state" {
  for_each = toset(var.operators)
  topic    = google_pubsub_topic.batch_state.id
  role     = "roles/pubsub.editor"
  member   = each.value
}

# --- job: read/write the inbox and the work bucket, read models, Firestore, logs, report to Batch, pull the image ---

resource "google_storage_bucket_iam_member" "job_reads_writes_inbox" {
  bucket = google_storage_bucket.inbox.name
  role   = "roles/storage.objectUser"
  member = local.job_member
}

# Parts and preview tiles: written by each task, listed, read and deleted by the stitcher.
resource "google_storage_bucket_iam_member" "job_writes_work" {
  bucket = google_storage_bucket.work.name
  role   = "roles/storage.objectUser"
  member = local.job_member
}

resource "google_storage_bucket_iam_member" "job_reads_models" {
  bucket = google_storage_bucket.models.name
  role   = "roles/storage.objectViewer"
  member = local.job_member
}

resource "google_project_iam_member" "job_firestore_user" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = local.job_member
}

resource "google_project_iam_member" "job_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = local.job_member
}

resource "google_project_iam_member" "job_batch_agent_reporter" {
  project = var.project_id
  role    = "roles/batch.agentReporter"
  member  = local.job_member
}

resource "google_artifact_registry_repository_iam_member" "job_reads_images" {
  repository = google_artifact_registry_repository.images.name
  location   = var.region
  role       = "roles/artifactregistry.reader"
  member     = local.job_member
}

# Batch publishes the job's state notifications with the job's service account.
resource "google_pubsub_topic_iam_member" "job_publishes_batch_state" {
  topic  = google_pubsub_topic.batch_state.id
  role   = "roles/pubsub.publisher"
  member = local.job_member
}

# --- builder: read the uploaded source, write build logs, push the function's image ---

resource "google_project_iam_member" "builder_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = local.builder_member
}

# The build's image goes to the gcf-artifacts repository Cloud Functions creates on first
# deploy, which does not exist yet to grant on.
resource "google_project_iam_member" "builder_pushes_images" {
  project = var.project_id
  role    = "roles/artifactregistry.writer"
  member  = local.builder_member
}

# The source is staged in a gcf-v2-sources bucket Cloud Functions creates, likewise.
resource "google_project_iam_member" "builder_reads_sources" {
  project = var.project_id
  role    = "roles/storage.objectAdmin"
  member  = local.builder_member
}

# IAM grants take a while to reach Cloud Build; without the wait the first build can fail
# to read its source (the provider's example waits the same 60 s).
resource "time_sleep" "builder_roles_propagate" {
  create_duration = "60s"
  depends_on = [
    google_project_iam_member.builder_log_writer,
    google_project_iam_member.builder_pushes_images,
    google_project_iam_member.builder_reads_sources,
  ]
}

# --- Google's agents ---

# Cloud Storage publishes object events to Pub/Sub for Eventarc.
data "google_storage_project_service_account" "gcs_agent" {}

resource "google_project_iam_member" "storage_agent_publishes" {
  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs_agent.email_address}"
}
