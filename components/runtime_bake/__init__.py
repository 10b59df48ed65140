"""The bake of the sd-runtime disk image behind components/runtime_image.py.

provider.py is the Pulumi dynamic provider (create, adopt, replace, retire), builder.py the
throwaway builder VM it runs the bake on, compute.py its Compute API client with the retry.
"""
