from runtime.service import run_service
from services.features.main import SPEC

run_service(SPEC)
