"""Experiments: one YAML file -> profile -> train -> search -> export -> report.

    load_experiment(path)      the validated config (nas.experiment.schema)
    run_experiment(path)       run or resume it (nas.experiment.runner)
    write_report(run)          runs/<id>/report.html (nas.experiment.report)

Steps are cached by a content hash of their inputs (nas.experiment.cache) and each run
lives in its own folder (nas.experiment.rundir); `hwnas runs` reads them back
(nas.experiment.runs).
"""
