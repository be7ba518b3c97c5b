"""Inference speed of a checkpoint (or of an untrained network of a built-in config): single-image latency (p50, p95)
and batch throughput, PyTorch against ONNX Runtime, in one process after a warm-up (process start, imports, model
loading and the ONNX export are outside every timed window).

Measurements (each timed call returns its result on the host, so CUDA work is finished inside the window):

- torch_fp32: the network in eval mode, fp32, NCHW, `torch.inference_mode`; a normalised host tensor is copied to the
  device, run, and the logits copied back. Batch throughput: the batch already on the device, logits copied back.
- torch_predictor: `adaptive_cnn.predict.predict` (softmax), the path `Predictor` takes: uint8 images on the host,
  normalisation, the config's precision (bf16 autocast by default) and memory format (channels_last), softmax, probabilities
  back on the host.
- onnxruntime_cpu / onnxruntime_cuda: the model written by `adaptive_cnn.inference.export_model` (fp32, checked against
  PyTorch), one `InferenceSession` made once (`run_exported` makes one per call), numpy in and out; CUDA only with
  --device cuda when this onnxruntime has the CUDAExecutionProvider (onnxruntime-gpu), else reported as unavailable.
- predictor_file: `read_image` + `Predictor.predict` on one PNG file: decode, preprocessing, forward, top-k records.

Without --checkpoint an untrained network of --config is saved to a temporary checkpoint (latency does not depend on
the weights). Without --image the first test image of the config's dataset is written as a PNG to a temporary
folder (random pixels of the config's image size when the dataset is not on disk; nothing is downloaded).

    python benchmarks/inference_latency.py --config mnist --device cpu --json out.json
    python benchmarks/inference_latency.py --config cifar10 --checkpoint runs/c10/checkpoints/best_model.pth --device cuda
"""
import argparse, datetime, json, os, platform, statistics, sys, tempfile, time, warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import adaptive_cnn
from adaptive_cnn.errors import AdaptiveCNNError
from adaptive_cnn.config import load_config
from adaptive_cnn.data import ImageData, normalize, read_dataset
from adaptive_cnn.predict import predict
from adaptive_cnn.inference import Predictor, export_model, read_image
from adaptive_cnn.models import AdaptiveCNN, count_parameters
from adaptive_cnn.runtime import cpu_name
from adaptive_cnn.checkpoint import save_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import error_text, git_commit   # noqa: E402  (benchmarks/ is not a package)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', default='mnist', help='built-in config name (mnist, cifar10) or YAML path; must match the checkpoint')
    p.add_argument('--checkpoint', help='a checkpoint written by adaptive-cnn train (default: an untrained network of --config)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help='cpu or cuda (default: cuda if available)')
    p.add_argument('--iters', type=int, default=None, help='timed single-image calls per measurement (default: 500 on CUDA, 200 on CPU)')
    p.add_argument('--warmup', type=int, default=None, help='untimed calls first (default: 50 on CUDA, 20 on CPU)')
    p.add_argument('--batch-size', type=int, default=256, help='images per call of the throughput measurement')
    p.add_argument('--batch-iters', type=int, default=None, help='timed batch calls (default: 30 on CUDA, 5 on CPU; 2 warm-up calls first)')
    p.add_argument('--threads', type=int, default=None, help="intra-op threads of torch and onnxruntime (default: torch's own)")
    p.add_argument('--image', help='image file for predictor_file (default: a random PNG of the config size)')
    p.add_argument('--no-onnx', action='store_true', help='skip the ONNX export and onnxruntime')
    p.add_argument('--json', metavar='OUT', help='write the results as JSON to OUT')
    args = p.parse_args(argv)
    cuda = args.device.startswith('cuda')
    if args.iters is None: args.iters = 500 if cuda else 200
    if args.warmup is None: args.warmup = 50 if cuda else 20
    if args.batch_iters is None: args.batch_iters = 30 if cuda else 5
    if args.iters < 2 or args.warmup < 0 or args.batch_iters < 1 or args.batch_size < 1:
        p.error('--iters must be >= 2, --batch-iters and --batch-size >= 1, --warmup >= 0')
    return args


def latency(call, warmup:int, iters:int) -> dict:
    "Per-call wall time statistics (ms) of `call`, which must return only once its result is on the host."
    for _ in range(warmup): call()
    times = []
    for _ in range(iters):
        start = time.perf_counter(); call(); times.append(time.perf_counter() - start)
    ms = np.array(times) * 1000
    return dict(p50_ms=float(np.percentile(ms, 50)), p95_ms=float(np.percentile(ms, 95)), mean_ms=float(ms.mean()),
                min_ms=float(ms.min()), max_ms=float(ms.max()), iters=iters, warmup=warmup)


def throughput(call, batch:int, iters:int, warmup:int=2) -> dict:
    "Images/s of `call` on a batch of `batch` images (`call` returns with its result on the host)."
    for _ in range(warmup): call()
    start = time.perf_counter()
    for _ in range(iters): call()
    s = time.perf_counter() - start
    return dict(images_per_s=batch * iters / s, ms_per_batch=1000 * s / iters, batch_size=batch, iters=iters)


def untrained_checkpoint(cfg, folder:Path) -> Path:
    "A checkpoint of a freshly initialised network of `cfg`, in the form `Trainer.model_state` writes."
    torch.manual_seed(cfg.train.seed)
    model = AdaptiveCNN.from_config(cfg).eval()
    path = folder/'untrained.pth'
    save_checkpoint(dict(model=model.state_dict(), config=asdict(cfg), classes=cfg.data.classes, kind='untrained',
                         val_acc=0.0, epoch=0, version=adaptive_cnn.__version__), path)
    return path


def sample_png(cfg, folder:Path) -> Path:
    "The first test image of the config's dataset as a PNG file if the dataset is on disk (never downloaded), else random pixels."
    c, (h, w) = cfg.data.channels, cfg.data.image_size
    try:
        raw = read_dataset(replace(cfg.data, download=False))
        split = raw.test if raw.test is not None else raw.train
        x, path = split.images[0], folder/f'{cfg.data.dataset}_test0_label{int(split.labels[0])}.png'
        pixels = x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()
    except Exception:
        pixels, path = np.random.default_rng(0).integers(0, 256, (h, w) if c == 1 else (h, w, 3), dtype=np.uint8), folder/'random.png'
    Image.fromarray(pixels).save(path)
    return path


def device_name(device:torch.device) -> str:
    if device.type == 'cuda': return torch.cuda.get_device_name(device)
    return f'{cpu_name()}, {os.cpu_count()} cores'


def onnx_session(path:Path, provider:str, threads:int):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), sess_options=opts, providers=[provider])
    if session.get_providers()[0] != provider: raise RuntimeError(f'onnxruntime fell back to {session.get_providers()}')
    return session


def format_table(rows:list[dict]) -> str:
    head = f"{'backend':<20}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}{'batch img/s':>14}{'ms/batch':>10}  notes"
    lines = [head, '-' * len(head)]
    num = lambda d, k, f: format(d[k], f) if d and d.get(k) is not None else '-'
    for r in rows:
        s, b = r.get('single') or {}, r.get('batch') or {}
        lines.append(f"{r['backend']:<20}{num(s, 'p50_ms', '.3f'):>9}{num(s, 'p95_ms', '.3f'):>9}{num(s, 'mean_ms', '.3f'):>9}"
                     f"{num(b, 'images_per_s', ',.0f'):>14}{num(b, 'ms_per_batch', '.2f'):>10}  {r.get('notes', '')}")
        if r.get('error'): lines.append(f"    failed: {r['error']}")
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available(): sys.exit('--device cuda: no CUDA device here')
    if args.threads: torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    try: cfg = load_config(args.config)
    except AdaptiveCNNError as e: sys.exit(f'inference_latency: {e}')
    try: import onnxruntime as ort
    except ImportError: ort = None

    rows, failed = [], False
    with tempfile.TemporaryDirectory(prefix='inference_latency_') as tmp:
        tmp = Path(tmp)
        checkpoint = Path(args.checkpoint) if args.checkpoint else untrained_checkpoint(cfg, tmp)
        try: predictor = Predictor(cfg, checkpoint, device=device)
        except AdaptiveCNNError as e: sys.exit(f'inference_latency: {e}')
        pcfg, d, t = predictor.cfg, predictor.cfg.data, predictor.cfg.train
        c, (h, w) = d.channels, d.image_size
        meta = dict(config=args.config, checkpoint=str(args.checkpoint) if args.checkpoint else 'untrained (temporary)',
                    parameters=count_parameters(predictor.model), image_shape=[c, h, w], device=str(device),
                    device_name=device_name(device), torch=torch.__version__, cuda=torch.version.cuda,
                    onnxruntime=getattr(ort, '__version__', None), onnxruntime_providers=ort.get_available_providers() if ort else None,
                    python=platform.python_version(), adaptive_cnn=adaptive_cnn.__version__, git=git_commit(),
                    torch_threads=threads, torch_interop_threads=torch.get_num_interop_threads(), onnxruntime_threads=threads,
                    cpu_count=os.cpu_count(), predictor_precision=t.precision, predictor_channels_last=t.channels_last,
                    date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                    command=' '.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                    loadavg=list(os.getloadavg()) if hasattr(os, 'getloadavg') else None)
        print(f"inference_latency: {args.config} ({meta['parameters']:,} parameters, {meta['checkpoint']}) on {meta['device_name']} "
              f"({device}), torch {torch.__version__}, onnxruntime {meta['onnxruntime']}, {meta['date']}")
        print(f"  {threads} torch/onnxruntime intra-op threads, {os.cpu_count()} CPUs; single image: {args.warmup} warm-up + "
              f"{args.iters} timed calls; batch {args.batch_size}: 2 warm-up + {args.batch_iters} timed calls", flush=True)

        g = torch.Generator().manual_seed(0)
        u8_one = torch.randint(0, 256, (1, c, h, w), dtype=torch.uint8, generator=g)
        u8_batch = torch.randint(0, 256, (args.batch_size, c, h, w), dtype=torch.uint8, generator=g)
        x_one, x_batch = normalize(u8_one, d.mean, d.std), normalize(u8_batch, d.mean, d.std)

        def measure(backend, notes, single, batch):
            nonlocal failed
            row = dict(backend=backend, notes=notes)
            try:
                row['single'] = latency(single, args.warmup, args.iters)
                row['batch'] = throughput(batch, args.batch_size, args.batch_iters)
            except Exception as e:
                row['error'], failed = error_text(e), True
            rows.append(row)
            s, b = row.get('single'), row.get('batch')
            print(f'  {backend}: ' + (f"p50 {s['p50_ms']:.3f} ms, p95 {s['p95_ms']:.3f} ms; " if s else '')
                  + (f"batch {b['images_per_s']:,.0f} img/s" if b else f"failed: {row.get('error')}"), flush=True)

        # PyTorch eager, fp32, NCHW
        model = predictor.model.float().to(device, memory_format=torch.contiguous_format).eval()
        xb_dev = x_batch.to(device)
        def torch_single():
            with torch.inference_mode(): return model(x_one.to(device)).cpu()
        def torch_batch():
            with torch.inference_mode(): return model(xb_dev).cpu()
        measure('torch_fp32', 'eager, fp32, NCHW, inference_mode; host tensor in, logits out', torch_single, torch_batch)

        # the Predictor's own path: predict with the config's precision and memory format
        one, many = ImageData(u8_one, torch.zeros(1, dtype=torch.long)), ImageData(u8_batch, torch.zeros(args.batch_size, dtype=torch.long))
        measure('torch_predictor', f"predict: uint8 in, {t.precision}, {'channels_last' if t.channels_last else 'NCHW'}, probabilities out",
                lambda: predict(predictor.model, one, pcfg, device, softmax=True).cpu(),
                lambda: predict(predictor.model, many, pcfg, device, batch_size=args.batch_size, softmax=True).cpu())

        # ONNX Runtime on the exported model
        if args.no_onnx: meta['onnx'] = 'skipped (--no-onnx)'
        elif ort is None: meta['onnx'] = 'skipped: onnxruntime is not installed'
        else:
            onnx_path = tmp/'model.onnx'
            start = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore')
                    diff = export_model(predictor.model, x_one, 'onnx', onnx_path, check=x_batch[:16])
                meta['onnx'] = dict(export_s=time.perf_counter() - start, max_abs_logit_diff=diff, bytes=onnx_path.stat().st_size)
            except Exception as e:
                meta['onnx'], failed = f'export failed: {error_text(e)}', True
                print(f"  ONNX export failed: {meta['onnx']}", flush=True)
            if onnx_path.is_file():
                providers = [('onnxruntime_cpu', 'CPUExecutionProvider')]
                if device.type == 'cuda':
                    if 'CUDAExecutionProvider' in ort.get_available_providers(): providers.append(('onnxruntime_cuda', 'CUDAExecutionProvider'))
                    else: rows.append(dict(backend='onnxruntime_cuda', notes=f"unavailable: onnxruntime {ort.__version__} has no CUDAExecutionProvider (needs onnxruntime-gpu)"))
                xo, xbo = x_one.numpy(), x_batch.numpy()
                for name, provider in providers:
                    try: session = onnx_session(onnx_path, provider, threads)
                    except Exception as e:
                        rows.append(dict(backend=name, error=error_text(e))); failed = True; continue
                    measure(name, f'{provider}, fp32, numpy in and out, graph optimisation ALL',
                            lambda: session.run(None, {'images': xo}), lambda: session.run(None, {'images': xbo}))

        # end to end on a file: decode, preprocessing, forward, records
        image = Path(args.image) if args.image else sample_png(pcfg, tmp)
        meta['image'] = str(image) if args.image else image.name
        row = dict(backend='predictor_file', notes=f'read_image + Predictor.predict on {image.name}, top-3 records; batch: the file {args.batch_size} times')
        try:
            row['single'] = latency(lambda: predictor.predict([read_image(image)], [str(image)]), args.warmup, args.iters)
            names = [str(image)] * args.batch_size
            row['batch'] = throughput(lambda: predictor.predict([read_image(image) for _ in names], names), args.batch_size, args.batch_iters)
        except Exception as e: row['error'], failed = error_text(e), True
        rows.append(row)
        print(f"  predictor_file: " + (f"p50 {row['single']['p50_ms']:.3f} ms" if 'single' in row else f"failed: {row['error']}"), flush=True)

    print()
    print(format_table(rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(dict(meta, results=rows), indent=1) + '\n')
        print(f'\nresults written to {args.json}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
