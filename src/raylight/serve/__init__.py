"""Online inference: a model bundle behind Ray Serve (app.py), its HTTP surface (http.py),
request schemas (schemas.py), deploy/update/rollback (deploy.py) and deploy artifacts (build.py).
"""
