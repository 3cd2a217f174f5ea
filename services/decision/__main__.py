from runtime.service import run_service
from services.decision.main import SPEC

run_service(SPEC)
