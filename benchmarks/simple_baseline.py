"""The simple baseline a new user would try first: multinomial logistic regression on the raw pixels.

    python benchmarks/simple_baseline.py DATA.npz [--max-seconds S] [--json OUT.json]

Pixels are scaled to [0, 1] and standardised (StandardScaler). A small dataset (at most 20,000 training images of at
most 1,024 pixel values) is fitted exactly with LogisticRegression (lbfgs, C=1); a larger one with SGDClassifier on the
log loss (alpha=1e-4), one epoch at a time, stopping before the epoch that would exceed --max-seconds. The method
string says which, how many epochs and why it stopped. The .npz holds x (N×H×W or N×H×W×C uint8), y, x_test, y_test.
"""
import argparse, json, sys, time, warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.preprocessing import StandardScaler

EXACT_MAX_IMAGES = 20_000     # above this, or above EXACT_MAX_FEATURES, lbfgs gets too slow for a time budget
EXACT_MAX_FEATURES = 1024
LBFGS_MAX_ITER = 1000
SGD_MAX_EPOCHS = 50
SEED = 0


def load(path:Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    "Flattened float32 pixels in [0, 1] and labels of the training and test splits."
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ('x', 'y', 'x_test', 'y_test') if k not in z.files]
        if missing: sys.exit(f'{path}: missing {", ".join(missing)}; the baseline needs x, y, x_test and y_test')
        flat = lambda x: x.reshape(len(x), -1).astype(np.float32) / 255
        return flat(z['x']), z['y'], flat(z['x_test']), z['y_test']

def fit_exact(x:np.ndarray, y:np.ndarray, seconds_left:float):
    "LogisticRegression (lbfgs) to convergence or LBFGS_MAX_ITER iterations; (model, method). Small data: no time limit."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', ConvergenceWarning)
        model = LogisticRegression(C=1.0, max_iter=LBFGS_MAX_ITER).fit(x, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return model, f'LogisticRegression lbfgs C=1, {int(model.n_iter_.max())} iterations ({"converged" if converged else "not converged"})'

def fit_sgd(x:np.ndarray, y:np.ndarray, seconds_left:float):
    "SGDClassifier (log loss) one shuffled epoch at a time within `seconds_left`; (model, method)."
    model = SGDClassifier(loss='log_loss', alpha=1e-4, random_state=SEED)
    classes, rng, start = np.unique(y), np.random.RandomState(SEED), time.perf_counter()
    epochs, reason = 0, f'all {SGD_MAX_EPOCHS} epochs'
    while epochs < SGD_MAX_EPOCHS:
        order = rng.permutation(len(y))   # partial_fit does not shuffle; an epoch in file order would see classes in runs
        model.partial_fit(x[order], y[order], classes=classes)
        epochs += 1
        elapsed = time.perf_counter() - start
        if elapsed * (epochs + 1) / epochs > seconds_left:   # the next epoch would end past the limit
            reason = f'stopped by the time limit, {seconds_left:.1f} s for the fit'
            break
    return model, f'SGDClassifier log loss alpha=1e-4, {epochs} epochs ({reason})'

def run(path:Path, max_seconds:float) -> dict:
    "Fit and score the baseline on the dataset at `path`."
    x, y, x_test, y_test = load(path)
    exact = len(x) <= EXACT_MAX_IMAGES and x.shape[1] <= EXACT_MAX_FEATURES
    start = time.perf_counter()
    scaler = StandardScaler().fit(x)
    x = scaler.transform(x)
    model, method = (fit_exact if exact else fit_sgd)(x, y, max_seconds - (time.perf_counter() - start))
    fit_s = time.perf_counter() - start
    test_acc = float((model.predict(scaler.transform(x_test)) == y_test).mean())
    wall_s = time.perf_counter() - start
    return dict(name=path.stem, method=method, test_acc=test_acc,
                fit_s=round(fit_s, 2), wall_s=round(wall_s, 2), num_train=len(y), num_test=len(y_test),
                features=int(x.shape[1]), max_seconds=max_seconds)

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('data', metavar='DATA.npz', type=Path, help='dataset with x, y, x_test, y_test')
    parser.add_argument('--max-seconds', type=float, default=120, metavar='S', help='time limit of the SGD fit (default 120)')
    parser.add_argument('--json', type=Path, metavar='OUT.json', help='write the result here')
    args = parser.parse_args(argv)
    r = run(args.data, args.max_seconds)
    print(f'{r["name"]}: logistic regression on pixels: test accuracy {r["test_acc"]:.4f} ({r["num_test"]:,} test images), '
          f'fit {r["fit_s"]:.2f} s ({r["method"]})')
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=1) + '\n')

if __name__ == '__main__': main()
