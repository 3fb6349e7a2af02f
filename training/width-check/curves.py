"""Validation curves of member 0 of training runs side by side, from their metrics.csv: force
MAE (meV/Å), per-atom energy MAE (meV/atom) and the weighted loss that picks the best epoch.

    python training/width-check/curves.py [RUN ...]   (default: the two width-check runs)
"""
import csv, glob, sys
def curve(run, m=0):
    rows = {}
    for f in sorted(glob.glob(f'{run}/members/member_{m}/logs/version_*/metrics.csv')):
        for r in csv.DictReader(open(f)):
            if r.get('val0_epoch/forces_mae'):
                rows[int(float(r['epoch']))] = (1000*float(r['val0_epoch/forces_mae']),
                                               1000*float(r['val0_epoch/per_atom_energy_mae']),
                                               float(r['val0_epoch/weighted_sum']))
    return rows
runs = sys.argv[1:] or ['training/si-reference-k222-wide', 'training/si-reference-k222-scratch']
cs = [curve(r) for r in runs]
n = max(max(c, default=0) for c in cs)
step = max(1, n // 25)
print('epoch  ' + '  '.join(f'{r.split("-")[-1]:>22}' for r in runs), '  (val F MAE meV/A, E MAE meV/atom, weighted loss)')
for e in list(range(0, n + 1, step)) + ([n] if n % step else []):
    print(f'{e:5d}  ' + '  '.join(f'{c[e][0]:8.1f} {c[e][1]:5.1f} {c[e][2]:7.4f}' if e in c else f'{"":>22}' for c in cs))
for r, c in zip(runs, cs):
    if c:
        b = min(c, key=lambda e: c[e][2]); print(r, 'best epoch', b, 'F MAE %.1f E MAE %.1f loss %.4f' % c[b], 'min F MAE %.1f' % min(v[0] for v in c.values()))
