# A Batch boot image for dropbatch's GPU tasks: Debian 12 with the pinned NVIDIA driver, the
# NVIDIA Container Toolkit, the task image already pulled and the chain's models already in the
# VMs' shared model cache. README.md beside this file says how to build it and what it saves.
# After GoogleCloudPlatform/batch-samples build-custom-image/build-debian-image (a Packer
# googlecompute build on a GPU VM); the driver comes from Google's cuda_installer
# (GoogleCloudPlatform/compute-gpu-installation, linux/README.md).

packer {
  required_plugins {
    googlecompute = {
      source  = "github.com/hashicorp/googlecompute"
      version = ">= 1.1.0"
    }
  }
}

variable "project_id" {
  type        = string
  description = "The project the image is built in and stored in (the deployment's)."
}

variable "zone" {
  type        = string
  default     = "us-central1-a"
  description = "Zone of the build VM: one that offers L4 GPUs, in the deployment's region."
}

variable "task_image" {
  type        = string
  description = "The task image by digest (terraform -chdir=infra output -raw image): pulled onto the disk."
}

variable "model_store" {
  type        = string
  description = "The model store exactly as the deployment names it (terraform -chdir=infra output -raw model_store)."
}

variable "service_account" {
  type        = string
  description = "The build VM's account: the job account (terraform -chdir=infra output -raw job_service_account), which already reads the image and the models."
}

variable "manifest" {
  type        = string
  default     = "manifests/examples/03-full-chain.yaml"
  description = "A manifest whose chain's models are copied into the image (path from the repository root)."
}

variable "driver_version" {
  type        = string
  default     = "580.82.07"
  description = "The NVIDIA driver: batch_jobs/cloud_batch.py GPU_DRIVER_VERSION (a test keeps them equal)."
}

variable "installer_version" {
  type        = string
  default     = "v1.9.1"
  description = "Google's cuda_installer release that installs the driver (lists driver_version)."
}

variable "image_family" {
  type        = string
  default     = "dropbatch-boot"
  description = "Image family: the deployment's boot_image is projects/PROJECT/global/images/family/dropbatch-boot."
}

locals {
  # Batch's VMs share this folder between a job's tasks (batch_jobs/cloud_batch.py,
  # MODEL_CACHE_HOST); the container sees it at MODEL_CACHE_MOUNT and runs as IMAGE_UID.
  model_cache_host  = "/var/lib/dropbatch/models"
  model_cache_mount = "/var/cache/dropbatch/models"
  image_uid         = "10001"
  registry          = split("/", var.task_image)[0]
  installer_url     = "https://storage.googleapis.com/compute-gpu-installation-us/installer/${var.installer_version}/cuda_installer.pyz"
  stamp             = formatdate("YYYYMMDDhhmmss", timestamp())
  # Every step as root, stopping at the first failing command.
  # (Packer's own execute_command pattern for sudo; .Vars carries its single-quoted values.)
  as_root = "chmod +x {{ .Path }}; {{ .Vars }} sudo -E bash -eux '{{ .Path }}'"
}

source "googlecompute" "dropbatch_boot" {
  project_id              = var.project_id
  zone                    = var.zone
  source_image_project_id = ["debian-cloud"]
  source_image_family     = "debian-12" # the oldest Debian the cuda_installer supports
  # g2-standard-4 carries one L4: the driver is installed and checked on the GPU it serves.
  machine_type          = "g2-standard-4"
  on_host_maintenance   = "TERMINATE"
  disk_size             = 50 # batch_jobs/cloud_batch.py BOOT_DISK_GB: the Job's disk is no smaller
  disk_type             = "pd-ssd"
  service_account_email = var.service_account
  scopes                = ["https://www.googleapis.com/auth/cloud-platform"]
  ssh_username          = "packer"
  image_name            = "dropbatch-boot-${local.stamp}"
  image_family          = var.image_family
  image_description     = "dropbatch boot image: NVIDIA ${var.driver_version}, NVIDIA Container Toolkit, ${var.task_image}"
  image_labels = {
    app = "dropbatch"
  }
}

build {
  sources = ["source.googlecompute.dropbatch_boot"]

  # Docker (Batch runs container runnables with it) and the base tools.
  provisioner "shell" {
    execute_command = local.as_root
    inline = [
      "apt-get update",
      "apt-get install -y docker.io python3 curl gnupg ca-certificates",
      "systemctl enable --now docker",
    ]
  }

  # The driver, pinned. The installer reboots the VM midway (its README: "call the same
  # command again"), so its exit is not this step's verdict: the step after the next checks
  # the driver that runs.
  provisioner "shell" {
    execute_command   = local.as_root
    expect_disconnect = true
    inline = [
      "mkdir -p /opt/google/cuda-installer",
      "curl -fsSL -o /opt/google/cuda-installer/cuda_installer.pyz ${local.installer_url}",
      "python3 /opt/google/cuda-installer/cuda_installer.pyz install_driver --force-version ${var.driver_version} || true",
    ]
  }

  provisioner "shell" {
    execute_command   = local.as_root
    pause_before      = "60s"
    expect_disconnect = true
    inline = [
      "python3 /opt/google/cuda-installer/cuda_installer.pyz install_driver --force-version ${var.driver_version} || true",
    ]
  }

  # The NVIDIA Container Toolkit, so `docker run --gpus all` reaches the driver (Batch's GPU
  # page asks for it on custom images that run container runnables outside COS).
  provisioner "shell" {
    execute_command = local.as_root
    pause_before    = "60s"
    inline = [
      "python3 /opt/google/cuda-installer/cuda_installer.pyz verify_driver",
      "nvidia-smi --query-gpu=driver_version --format=csv,noheader | grep -qx ${var.driver_version}",
      "curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | gpg --dearmor --yes -o /usr/share/keyrings/nvidia-container-toolkit.gpg",
      "echo 'deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit.gpg] https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /' > /etc/apt/sources.list.d/nvidia-container-toolkit.list",
      "apt-get update",
      "apt-get install -y nvidia-container-toolkit",
      "nvidia-ctk runtime configure --runtime=docker",
      "systemctl restart docker",
    ]
  }

  # The task image, pulled by digest, and its own self-check on this GPU (the one `dropbatch
  # doctor` runs: GPU visible, onnxruntime on CUDA, ffmpeg encodes), with the Job's --gpus.
  provisioner "shell" {
    execute_command = local.as_root
    inline = [
      "gcloud auth configure-docker ${local.registry} --quiet",
      "docker pull ${var.task_image}",
      "docker run --rm --gpus all --entrypoint python ${var.task_image} -m batch_jobs.selfcheck",
    ]
  }

  # The chain's models, verified into the VMs' shared cache by the task image's own model
  # store (`dropbatch models check`), so a task finds them there and fetches none.
  provisioner "file" {
    source      = var.manifest
    destination = "/tmp/manifest.yaml"
  }

  provisioner "shell" {
    execute_command = local.as_root
    inline = [
      "mkdir -p ${local.model_cache_host}",
      "chown ${local.image_uid}:${local.image_uid} ${local.model_cache_host}",
      "docker run --rm --user ${local.image_uid} -v ${local.model_cache_host}:${local.model_cache_mount} -v /tmp/manifest.yaml:/tmp/manifest.yaml:ro -e DROPBATCH_MODEL_CACHE=${local.model_cache_mount} --entrypoint dropbatch ${var.task_image} models check --store ${var.model_store} --manifest /tmp/manifest.yaml",
      "rm /tmp/manifest.yaml",
    ]
  }

  # No build key stays on the image (as Batch's sample does).
  provisioner "shell" {
    inline = ["rm -f /home/packer/.ssh/authorized_keys"]
  }
}
