"""Evaluation: image metrics, scoring folders of renders against ground truth, and comparison reports.

Layer: ``fields / lighting / data / eval / export`` (imports only :mod:`relight3d.data`, ``errors`` and ``cli_types``
besides itself). Inside the package the modules build on each other in this order, with no way back:

* :mod:`.image_metrics` (PSNR, SSIM, channel alignment), :mod:`.lpips` (LPIPS v0.1 with weights found on disk),
  :mod:`.metrics` (the twelve numbers of one image, ``score_image``);
* :mod:`.records` (``EvalRecord`` / ``EvaluationResult``, their means and JSON form);
* :mod:`.folders` (PNG folders by view name, RGBA loading and compositing), :mod:`.manifest` (``EvalRun`` and the
  runs a JSON/YAML manifest names);
* :mod:`.evaluate` (``evaluate_folders``, ``compare``, ``evaluate_manifest``: compute, write nothing);
* :mod:`.tables` (summaries; terminal, Markdown and CSV tables), :mod:`.report_html` (the self-contained HTML page),
  :mod:`.report` (``write_report``: every report file);
* :mod:`.cli` (``relight3d eval``; an app-layer module).

Example::

    from relight3d.eval.evaluate import compare
    from relight3d.eval.report import write_report

    result = compare("gt/city", {"ours": "runs/ours/city"}, baseline_dir="gt/light000")
    write_report(result, "reports/city")
"""
