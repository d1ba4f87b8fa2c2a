"""Base configuration: every field any setting can set, with the paper's defaults.

Setting configs (`cifar100_preactresnet18.py`, ...) start from `get_config()` here and
override fields. This file alone trains nothing useful; it is the schema. Each setting
config takes the method as its argument, `--config <setting>:cutmix`, and
`methods.configure` sets that method's paper hyperparameters (`alignmix_jax.methods`).

Field groups:
  dataset:   which data, where it lives, image size, split sizes, augmentation.
  model:     encoder E, stage-2 encoder e, decoder D, classifier g.
  mixup:     the method (alignmix, baselines), its mode weights and the alignment.
  optimizer: SGD and the learning-rate schedule.
  eval:      evaluation programs run by `--mode eval`.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0

  # Data. `train_size` and `test_size` are the split sizes, known without network access.
  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = 'digits'  # digits | fashion_mnist | cifar10 | cifar100 |
  #                                 imagenet2012 | caltech_birds2011 | tiny_imagenet |
  #                                 image_folder
  # Where the files are (docs/data.md): the folder of the Fashion-MNIST IDX files or
  # of the CIFAR binary archive, the root of a folder dataset, or a tfds data_dir ('': tfds'
  # default, ~/tensorflow_datasets). Digits need none.
  config.dataset.data_dir = ''
  # Back end of the batches (alignmix_jax/data): 'device' holds the split on the
  # accelerators and batches it inside the train step (no TensorFlow); 'tfdata' makes them
  # on the host with tf.data; 'auto' is 'device' for the datasets held in memory (all but
  # imagenet2012 and caltech_birds2011), 'tfdata' for the rest.
  config.dataset.pipeline = 'auto'
  # Folder datasets (tiny_imagenet, image_folder): leave out the images that cannot be
  # decoded, with a warning and a count, instead of stopping with an error naming the file.
  config.dataset.skip_unreadable = False
  # image_folder: label the images by class subfolder (False: every image below the folder,
  # unlabeled, label -1; the OOD sets are read so).
  config.dataset.folder_labels = True
  config.dataset.image_size = 32  # Side of the square images the model sees.
  config.dataset.num_classes = 10
  config.dataset.train_split = 'train'
  config.dataset.test_split = 'test'
  config.dataset.train_size = 1437
  config.dataset.test_size = 360
  # Low-data regime (datasets held in memory): train on a class-balanced subset of this many
  # training examples (0: all; a multiple of num_classes), the same for every method and seed:
  # drawn by `subset_seed` alone. The test split stays whole; epochs count subset examples.
  config.dataset.train_examples = 0
  config.dataset.subset_seed = 0
  config.dataset.augment = 'crop_flip'  # crop_flip | crop | imagenet | cub | none
  config.dataset.crop_padding = 4  # Zero padding of the crop_flip augmentation.
  config.dataset.shuffle_buffer = 10_000  # tf.data, streamed datasets.
  # tf.data: data shards (0: one per process). Fix it to get the same batches on any number
  # of processes that divides it (the device back end gives the same batches on any).
  config.dataset.num_shards = 0
  # Per-channel statistics of the [0, 1] images; the model normalizes inside, so attacks
  # work in pixel space.
  config.dataset.mean = (0.5, 0.5, 0.5)
  config.dataset.std = (0.25, 0.25, 0.25)
  config.dataset.with_bbox = False  # Yield `bbox` [B, 4] (ymin, xmin, ymax, xmax) in [0, 1].

  # Model. The classifier g always exists; `autoencoder` says whether there is a decoder.
  config.model = ml_collections.ConfigDict()
  config.model.name = 'preactresnet18'  # preactresnet18 | wrn16_8 | resnet50 | vgg_gap
  config.model.width = 64  # Base width; 64 for PreActResNet18 and ResNet-50. Tests shrink it.
  # PreActResNet18's identity shortcut: 'authors' adds the pre-activated relu(bn1(x)) (the
  # authors' code, behind the paper's numbers); 'standard' adds x (He et al. 2016, the
  # PreActResNet of PuzzleMix, Co-Mixup, OpenMixup).
  config.model.preact_shortcut = 'authors'
  config.model.autoencoder = 'ae'  # ae | vae | none
  config.model.latent = 'vector'  # vector (fc A -> z) | tensor (Z: conv 2x2 stride 2)
  config.model.latent_dim = 0  # d of z; 0: d = c (vector z) or c / 4 (tensor Z).
  # Side of A. 0: the encoder's native side (4 on 32x32 PreActResNet18, 8 on WRN16-8 and on
  # 64x64 Tiny-ImageNet, 7 on ImageNet ResNet-50). Smaller: average pooling (the 2x2
  # ablation); twice the native side: the last downsampling removed (the 8x8 ablation).
  config.model.feature_resolution = 0
  config.model.dtype = 'float32'  # float32 | bfloat16 (compute; parameters stay float32).
  # How convolutions are written: 'xla' (plain, what GPUs and TPUs run), 'cpu' (the same
  # function in the form XLA:CPU runs fast: canonical-form gradients, batch pieces), 'auto'
  # ('cpu' on a CPU backend, else 'xla'). See alignmix_jax/models/cpu_conv.py.
  config.model.conv = 'auto'
  # A workdir (or its checkpoints/ folder) of a run with the same encoder, e.g. ImageNet
  # ResNet-50: its latest encoder weights initialise E of a new run (CUB fine-tuning).
  config.model.pretrained = ''

  # Mixup method. `mode_weights` order: clean, input, latent, feature, feature_reversed.
  config.mixup = ml_collections.ConfigDict()
  config.mixup.method = 'alignmix'  # A name of `alignmix_jax.methods` (`methods.names()`).
  config.mixup.alpha = 2.0  # lam ~ Beta(alpha, alpha).
  config.mixup.mode_weights = (1.0, 1.0, 1.0, 1.0, 1.0)
  config.mixup.align = True  # Align A before mixing it (False: plain feature mixup).
  config.mixup.align_latent = False  # Align a tensor latent Z before mixing it ((13)).
  # Sinkhorn (paper and authors' code: eps 0.1, 100 iterations, one plan per pair for both
  # (13) and (14)). On real features it does not converge in 100 iterations (the metric
  # train/sinkhorn_row_error shows how far); barycentric_projection=True divides R by the
  # marginal each direction sums over, so that every aligned vector is a convex combination
  # (an ablation; the authors do not).
  config.mixup.sinkhorn_eps = 0.1
  config.mixup.sinkhorn_iters = 100
  config.mixup.barycentric_projection = False
  config.mixup.reconstruction_weight = 1.0
  # Lr of (1) per example: 'mean', the squared error averaged over pixels and channels
  # (PyTorch's MSELoss); 'sum', the squared Euclidean distance ||x - x_hat||^2 as the
  # paper writes it, H * W * 3 times larger: on digits at lr 0.02 it diverged in 13 steps.
  config.mixup.reconstruction_loss = 'mean'
  config.mixup.kl_weight = 1.0  # VAE only.
  # The loss against the (mixed) targets: 'cross_entropy' (the paper, (7)), or 'softmax_bce',
  # PyTorch's BCELoss of the softmax, as the official PuzzleMix code trains (its method sets
  # it).
  config.mixup.classification_loss = 'cross_entropy'
  config.mixup.manifold_layers = (0, 1, 2)  # manifold_mixup: 0 = input, k = after stage k.
  # puzzlemix (`alignmix_jax.puzzlemix`): the official code's CIFAR-100 PreActResNet18
  # settings (its README; main.py's defaults but t_size -1). Their run: batch 100, wd 1e-4,
  # lr 0.1 for 1200 epochs (decays at 400, 800) or 0.2 for 600 (350, 500), alpha 1.
  config.mixup.puzzlemix = ml_collections.ConfigDict()
  config.mixup.puzzlemix.n_labels = 3  # Mixing levels of a block: 1, 0.5, 0.
  config.mixup.puzzlemix.beta = 1.2  # Label smoothness between neighbouring blocks.
  config.mixup.puzzlemix.gamma = 0.5  # Data smoothness (colour across block borders).
  config.mixup.puzzlemix.eta = 0.2  # Weight of the lam prior of the levels.
  config.mixup.puzzlemix.neigh_size = 4  # Pixels pooled for the border terms.
  config.mixup.puzzlemix.transport = True  # Move salient blocks where the mask keeps them.
  config.mixup.puzzlemix.t_size = 4  # Transport block side in pixels (-1: the cut's blocks).
  config.mixup.puzzlemix.t_eps = 0.8  # Weight of the distance a block moves.
  # comixup (`alignmix_jax.comixup`): the official code's CIFAR-100 PreActResNet18 settings
  # (its README: batch 100, lr 0.2 for 300 epochs, decays at 100 and 200, alpha 2).
  config.mixup.comixup = ml_collections.ConfigDict()
  config.mixup.comixup.block_num = 4  # Blocks per side of the labelling (-1: drawn).
  config.mixup.comixup.part = 20  # Inputs mixed together (a device's batch in groups).
  config.mixup.comixup.beta = 0.32  # Label smoothness.
  config.mixup.comixup.gamma = 1.0  # Diversity: penalty on inputs shared by outputs.
  config.mixup.comixup.thres = 0.83  # Share of an output's blocks before the penalty (tau).
  config.mixup.comixup.thres_type = 'hard'
  config.mixup.comixup.eta = 0.05  # Weight of the Dirichlet(alpha) prior.
  config.mixup.comixup.omega = 0.001  # Weight of the inputs' compatibility.
  config.mixup.comixup.set_resolve = True  # Make identical outputs differ.
  config.mixup.comixup.niter = 4  # Rounds over the outputs.
  # > 0: the saliency pass in train mode also trains on 2 clean_lam CE / K (official: 1).
  config.mixup.comixup.clean_lam = 1.0

  # Optimisation. Epoch counts are converted to steps with dataset.train_size.
  config.batch_size = 128  # Global batch size, split over all devices of all processes.
  config.num_epochs = 2000
  config.num_train_steps = -1  # > 0 overrides num_epochs (quick runs and tests).
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 0.1  # Per global batch of `batch_size` (no scaling).
  config.optimizer.classifier_learning_rate = 0.0  # 0 means the same as learning_rate.
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = False
  config.optimizer.weight_decay = 1e-4
  config.optimizer.decay_epochs = (500, 1000, 1500)  # Multiply the rate by decay_factor there.
  config.optimizer.decay_factor = 0.1
  config.optimizer.warmup_epochs = 0

  # Loop.
  config.log_every_steps = 100
  config.eval_every_epochs = 10
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  # Train steps per call to the devices (one lax.scan; the same results as one at a time,
  # to float32 round-off): fewer dispatches, for short steps on accelerators. Dispatches end
  # at every step that logs, saves or evaluates. 0: the backend's default
  # (parallel.DEFAULT_STEPS_PER_DISPATCH: CPU 1, GPU and TPU 16).
  config.steps_per_dispatch = 0

  # Evaluation programs run by `--mode eval` (see alignmix_jax/evaluation/).
  config.eval = ml_collections.ConfigDict()
  # classification | attacks | calibration | ood | localization (CAM: autoencoder 'none').
  config.eval.programs = ('classification', 'attacks', 'calibration', 'ood')
  config.eval.top_k = (1,)  # Report top{k}_error for each k; (1, 5) on ImageNet.
  config.eval.batch_size = 500
  config.eval.fgsm_eps = 8 / 255
  config.eval.pgd_eps = 4 / 255
  config.eval.pgd_step = 2 / 255
  config.eval.pgd_iters = 20
  config.eval.attack_examples = 0  # Attack the first N test examples (0: all; the paper).
  config.eval.calibration_bins = 15
  # OOD image folders (the ODIN release's sets; '' = not used), set from the command line
  # with e.g. --config.eval.ood_folders.lsun_crop=/data/LSUN. Other sets: add a field here
  # or in a config file.
  config.eval.ood_folders = ml_collections.ConfigDict({
      name: '' for name in ('lsun_crop', 'lsun_resize', 'isun', 'tiny_imagenet_crop',
                            'tiny_imagenet_resize', 'sklearn_digits')})
  config.eval.ood_noise = ('uniform', 'gaussian')  # Built-in OOD noise sets (uniform | gaussian).
  config.eval.cam_threshold = 0.15
  return config
